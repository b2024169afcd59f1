import path from 'node:path';
import cookieParser from 'cookie-parser';
import express, { type Express, type RequestHandler } from 'express';
import { NotFoundError } from '../lib/errors.js';
import { PROJECT_ROOT } from '../lib/paths.js';
import { hasConsoleToken, loadSession, requireAdmin, requireCsrf } from './http/auth-middleware.js';
import { refuseCrossSite } from './http/cross-site.js';
import { errorHandler } from './http/error-handler.js';
import { requestLog } from './http/request-log.js';
import { requestTimeouts } from './http/timeouts.js';
import { uploadReceiver } from './http/upload.js';
import { agentRouter } from './routes/agent-router.js';
import { authRouter } from './routes/auth-router.js';
import { healthRouter } from './routes/health-router.js';
import { operationsRouter } from './routes/operations-router.js';
import { packagesRouter } from './routes/packages-router.js';
import { admissionRouter } from './routes/admission-router.js';
import { serversRouter } from './routes/servers-router.js';
import { settingsRouter } from './routes/settings-router.js';
import { createServices, type MasterDeps, type MasterServices } from './services.js';
import './http/locals.js';

export interface AppDeps extends MasterDeps {
  /** Already-built services (main.ts bootstraps them first); built here when absent. */
  services?: MasterServices;
}

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'same-origin',
};

/** What every request goes through first: its time limits, the request log, the security headers. */
export function frontMiddleware(config: AppDeps['config'], log: AppDeps['log']): RequestHandler[] {
  // Over TLS, browsers must never again reach the console over plain HTTP (no subdomains: the
  // master's name may have siblings that serve HTTP).
  const headers = config.tlsCert !== null ? { ...SECURITY_HEADERS, 'Strict-Transport-Security': 'max-age=31536000' } : SECURITY_HEADERS;
  return [
    requestTimeouts(config.requestTimeoutMs, log, config.sendIdleTimeoutMs),
    requestLog(log),
    (_req, res, next) => {
      res.set(headers);
      next();
    },
  ];
}

/** Builds the master's express app from its dependencies. It does not listen: main.ts does. */
export function createApp(deps: AppDeps): Express {
  const { config, db, store, log } = deps;
  const services = deps.services ?? createServices(deps);
  const app = express();
  app.disable('x-powered-by');
  app.set('views', path.join(PROJECT_ROOT, 'views'));
  app.set('view engine', 'ejs');
  // Behind a balancer, the client's address is what the balancer saw (X-Forwarded-For), from it alone.
  if (config.trustProxy.length > 0) app.set('trust proxy', config.trustProxy);

  app.use(frontMiddleware(config, log));
  app.use(healthRouter({ db, store, log }));
  app.use(agentRouter({
    agents: services.agents, admission: services.admission, store, key: services.masterKey, enrollAttemptsPerWindow: config.loginAttemptsPerWindow,
    presignSeconds: config.storePresignSeconds, replays: services.replays, log,
  }));
  app.use(cookieParser());
  app.use(express.urlencoded({ extended: false, limit: '64kb' }));
  app.use(loadSession(services.auth));
  app.use(refuseCrossSite({ log, hasConsoleToken: hasConsoleToken(services.auth) }));
  app.use(authRouter({ auth: services.auth, log, secureCookies: config.tlsCert !== null }));
  app.use(requireAdmin(services.auth));
  app.use(requireCsrf);
  app.use('/assets', express.static(path.join(PROJECT_ROOT, 'public'), { index: false, maxAge: '1h' }));
  app.use('/api/master', express.json({ limit: '64kb' }));

  // The menu shows how many servers wait for admission, on every console page.
  app.use(async (req, res, next) => {
    if (req.method === 'GET' && !req.path.startsWith('/api/') && !req.path.startsWith('/assets/')) res.locals.pendingServers = await services.admission.countPending();
    next();
  });
  app.use(serversRouter({ servers: services.servers, settings: services.settings, admission: services.admission }));
  app.use(admissionRouter({ admission: services.admission, servers: services.servers, key: services.masterKey }));
  const receiveUpload = uploadReceiver(store, { maxBytes: config.maxUploadBytes, maxParallel: config.maxParallelUploads, idleTimeoutMs: config.idleTimeoutMs }, log);
  app.use(packagesRouter({ packages: services.packages, settings: services.settings, receiveUpload, config }));
  app.use(operationsRouter({ operations: services.operations, packages: services.packages, servers: services.servers, settings: services.settings }));
  app.use(settingsRouter({ settings: services.settings, auth: services.auth }));

  app.use((req) => {
    throw new NotFoundError(`There is no page ${req.path}`);
  });
  app.use(errorHandler(log));
  return app;
}
