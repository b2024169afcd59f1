import { Router, type Request, type Response } from 'express';
import {
  CSRF_MESSAGE, clientOf, DEVICE_COOKIE, hasLoginFormToken, LOGIN_COOKIE, SESSION_COOKIE, checkCsrf, setSessionCookie,
} from '../http/auth-middleware.js';
import { loginSchema } from '../http/schemas.js';
import { ForbiddenError } from '../errors.js';
import type { Logger } from '../../lib/logger.js';
import { KNOWN_DEVICE_MS, LOGIN_FORM_MS } from '../services/auth-tokens.js';
import type { AuthService } from '../services/auth-service.js';

/** Only local paths: a "next" pointing at another site would make the login page an open redirect. */
function safeNext(next: string | undefined): string {
  return next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\') ? next : '/servers';
}

export interface AuthRouterDeps {
  auth: AuthService;
  log: Logger;
  secureCookies: boolean;
}

/** GET/POST /login and POST /logout; the only pages open without a session. */
export function authRouter(deps: AuthRouterDeps): Router {
  const { auth, log, secureCookies } = deps;
  const router = Router();
  const cookieOptions = { httpOnly: true, sameSite: 'strict', secure: secureCookies } as const;

  /**
   * The login form's CSRF token without a database row: a random value in a cookie, and in the
   * form a MAC of it (with its expiry). A page of another site can neither read the cookie nor
   * make the MAC, so it cannot post a login form the master accepts.
   */
  async function formToken(req: Request, res: Response): Promise<string> {
    let nonce = (req.cookies as Record<string, string | undefined>)[LOGIN_COOKIE];
    if (!auth.tokens.isLoginNonce(nonce)) {
      nonce = auth.tokens.newLoginNonce();
      res.cookie(LOGIN_COOKIE, nonce, { ...cookieOptions, path: '/login', maxAge: LOGIN_FORM_MS });
    }
    return auth.tokens.loginFormToken(nonce);
  }

  router.get('/login', async (req, res) => {
    if (res.locals.session?.username) return res.redirect(303, safeNext(String(req.query.next ?? '')));
    res.render('login', { csrfToken: await formToken(req, res), error: null, next: typeof req.query.next === 'string' ? req.query.next : '' });
  });

  router.post('/login', async (req, res) => {
    if (!(await hasLoginFormToken(auth, req))) throw new ForbiddenError(CSRF_MESSAGE);
    const parsed = loginSchema.safeParse(req.body);
    const next = parsed.success ? parsed.data.next ?? '' : '';
    if (!parsed.success) {
      res.status(422).render('login', { csrfToken: await formToken(req, res), error: parsed.error.issues[0]?.message ?? 'Enter the user name and password', next });
      return;
    }
    const result = await auth.login(parsed.data.username, parsed.data.password, clientOf(req));
    if (!result) {
      res.status(401).render('login', { csrfToken: await formToken(req, res), error: 'Wrong user name or password', next });
      return;
    }
    // A new session id at login, so an id planted before login is worth nothing after it.
    await auth.destroySession(res.locals.sessionId);
    const { id } = await auth.createSession(result.user);
    setSessionCookie(res, id, secureCookies);
    res.clearCookie(LOGIN_COOKIE, { ...cookieOptions, path: '/login' });
    res.cookie(DEVICE_COOKIE, result.deviceCookie, { ...cookieOptions, path: '/', maxAge: KNOWN_DEVICE_MS });
    log.info('login', { user: result.user, ip: req.ip ?? null });
    res.redirect(303, safeNext(next));
  });

  router.post('/logout', async (req, res) => {
    if (res.locals.session) {
      checkCsrf(req, res);
      await auth.destroySession(res.locals.sessionId);
      log.info('logout', { user: res.locals.session.username ?? null });
    }
    res.clearCookie(SESSION_COOKIE, { path: '/' });
    res.redirect(303, '/login');
  });

  return router;
}
