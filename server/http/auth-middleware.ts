import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { AuthenticationError, ForbiddenError } from '../errors.js';
import type { AuthService, Client } from '../services/auth-service.js';
import { safeEqual } from '../secrets.js';

export const SESSION_COOKIE = 'propagator_session';
/** The login form's random value; its token is a MAC of it (nothing stored for visitors). */
export const LOGIN_COOKIE = 'propagator_login';
/** Marks a browser that logged in before, so the per-user limit on failed logins spares it. */
export const DEVICE_COOKIE = 'propagator_device';

const cookie = (req: Request, name: string): string | undefined => (req.cookies as Record<string, string | undefined>)[name];

/** The client as the login limits see it: its address and its known-device cookie. */
export function clientOf(req: Request): Client {
  return { ip: req.ip ?? req.socket.remoteAddress ?? 'unknown', deviceCookie: cookie(req, DEVICE_COOKIE) };
}

export function isApiRequest(req: Request): boolean {
  return req.path.startsWith('/api/') || req.path === '/api';
}

/** Reads the session cookie (if any) into res.locals. */
export function loadSession(auth: AuthService): RequestHandler {
  return async (req, res, next) => {
    const id = cookie(req, SESSION_COOKIE);
    const session = await auth.findSession(id);
    res.locals.session = session;
    if (session && id) {
      res.locals.sessionId = id;
      res.locals.csrfToken = session.csrfToken;
    }
    next();
  };
}

export function setSessionCookie(res: Response, id: string, secure: boolean): void {
  res.cookie(SESSION_COOKIE, id, { httpOnly: true, sameSite: 'strict', secure, path: '/', maxAge: 12 * 3600_000 });
}

/** Everything but /health and the login page goes through here: a session, or HTTP Basic. */
export function requireAdmin(auth: AuthService): RequestHandler {
  return async (req, res, next) => {
    const session = res.locals.session;
    if (session?.username) {
      res.locals.user = session.username;
      res.locals.authMethod = 'session';
      return next();
    }
    const header = req.get('authorization');
    if (header) {
      const user = await auth.checkBasic(header, clientOf(req));
      if (!user) throw new AuthenticationError('Wrong user name or password');
      res.locals.user = user;
      res.locals.authMethod = 'basic';
      // Pages render their forms for every admin; Basic clients need no CSRF token, so it is empty.
      res.locals.csrfToken ??= '';
      return next();
    }
    if (!isApiRequest(req) && req.method === 'GET' && req.accepts(['html', 'json']) === 'html') {
      return res.redirect(303, `/login?next=${encodeURIComponent(req.originalUrl)}`);
    }
    throw new AuthenticationError('Authentication required: log in, or send HTTP Basic credentials of the admin account');
  };
}

/** The token a form or script sends back: header, form field or (for multipart forms) query. */
function sentToken(req: Request): string | undefined {
  const body = req.body as Record<string, unknown> | undefined;
  const fromBody = body && typeof body._csrf === 'string' ? body._csrf : undefined;
  const fromQuery = typeof req.query._csrf === 'string' ? req.query._csrf : undefined;
  return req.get('x-csrf-token') ?? fromBody ?? fromQuery;
}

export const CSRF_MESSAGE = 'This form has expired or did not come from this console (CSRF token missing or wrong); reload the page and try again';

/** Whether the request carries its session's CSRF token. */
export function hasSessionToken(req: Request, res: Response): boolean {
  const expected = res.locals.session?.csrfToken;
  const sent = sentToken(req);
  return Boolean(expected && sent && safeEqual(sent, expected));
}

/** Whether a login form carries the token made for its cookie. */
export function hasLoginFormToken(auth: AuthService, req: Request): Promise<boolean> {
  return auth.tokens.checkLoginFormToken(cookie(req, LOGIN_COOKIE), sentToken(req));
}

/** A token only the console's own pages have: the session's, or the login form's. */
export function hasConsoleToken(auth: AuthService) {
  return async (req: Request, res: Response): Promise<boolean> => hasSessionToken(req, res) || (req.path === '/login' && (await hasLoginFormToken(auth, req)));
}

export function checkCsrf(req: Request, res: Response): void {
  if (!hasSessionToken(req, res)) throw new ForbiddenError(CSRF_MESSAGE);
}

/**
 * Cookie-authenticated changes must carry the session's CSRF token; Basic-auth API calls need none
 * (a browser's cross-site request never gets here: refuseCrossSite turned it away).
 */
export function requireCsrf(req: Request, res: Response, next: NextFunction): void {
  if (['GET', 'HEAD', 'OPTIONS'].includes(req.method) || res.locals.authMethod !== 'session') return next();
  checkCsrf(req, res);
  next();
}
