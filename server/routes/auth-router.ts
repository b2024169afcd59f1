import { Router, type Request, type Response } from 'express';
import { checkCsrf, SESSION_COOKIE, setSessionCookie } from '../http/auth-middleware.js';
import { failureLimiter } from '../http/failure-limiter.js';
import { loginSchema } from '../http/schemas.js';
import type { Logger } from '../../lib/logger.js';
import type { AuthService } from '../services/auth-service.js';

/** Only local paths: a "next" pointing at another site would make the login page an open redirect. */
function safeNext(next: string | undefined): string {
  return next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\') ? next : '/servers';
}

export interface AuthRouterDeps {
  auth: AuthService;
  log: Logger;
  secureCookies: boolean;
  loginAttemptsPerWindow: number;
}

/** GET/POST /login and POST /logout; the only pages open without a session. */
export function authRouter(deps: AuthRouterDeps): Router {
  const { auth, log, secureCookies } = deps;
  const router = Router();

  // Failed logins only count; after too many, the address waits out the window.
  const limiter = failureLimiter({
    windowMs: 15 * 60_000,
    limit: deps.loginAttemptsPerWindow,
    isFailure: (_req, res) => res.statusCode === 401 || res.statusCode === 403,
    message: 'Too many failed logins from this address; wait 15 minutes and try again',
  });

  /** Every login form carries a CSRF token, so even an anonymous visitor gets a session row. */
  async function ensureSession(req: Request, res: Response): Promise<string> {
    if (res.locals.session) return res.locals.session.csrfToken;
    const { id, session } = await auth.createSession(null);
    setSessionCookie(res, id, secureCookies);
    res.locals.session = session;
    res.locals.sessionId = id;
    return session.csrfToken;
  }

  router.get('/login', async (req, res) => {
    if (res.locals.session?.username) return res.redirect(303, safeNext(String(req.query.next ?? '')));
    const csrfToken = await ensureSession(req, res);
    res.render('login', { csrfToken, error: null, next: typeof req.query.next === 'string' ? req.query.next : '' });
  });

  router.post('/login', limiter, async (req, res) => {
    checkCsrf(req, res);
    const parsed = loginSchema.safeParse(req.body);
    const username = parsed.success ? parsed.data.username : '';
    const ok = parsed.success && (await auth.checkPassword(parsed.data.username, parsed.data.password));
    if (!ok) {
      log.warn('login failed', { user: username.slice(0, 64), ip: req.ip ?? null });
      res.status(401).render('login', { csrfToken: res.locals.session?.csrfToken ?? '', error: 'Wrong user name or password', next: parsed.success ? parsed.data.next ?? '' : '' });
      return;
    }
    // A new session id at login, so an id planted before login is worth nothing after it.
    await auth.destroySession(res.locals.sessionId);
    const { id } = await auth.createSession(username);
    setSessionCookie(res, id, secureCookies);
    log.info('login', { user: username, ip: req.ip ?? null });
    res.redirect(303, safeNext(parsed.data.next));
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
