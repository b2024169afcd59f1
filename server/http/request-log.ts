import type { RequestHandler } from 'express';
import type { Logger, LogLevel } from '../../lib/logger.js';

/**
 * One log line per request: method, path without query (it may hold a CSRF token), status, time.
 * Agents' calls are logged at debug level: thousands of slaves calling every few seconds would
 * drown everything else at info.
 */
export function requestLog(log: Logger): RequestHandler {
  return (req, res, next) => {
    const level: LogLevel = req.url.startsWith('/api/agent/') ? 'debug' : 'info';
    if (!log.enabled(level)) return next();
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      log[level]('request', {
        method: req.method,
        path: req.path,
        status: res.statusCode,
        ms: Number((process.hrtime.bigint() - started) / 1_000_000n),
        user: (res.locals.user as string | undefined) ?? null,
        ip: req.ip ?? null,
      });
    });
    next();
  };
}
