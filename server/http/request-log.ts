import type { RequestHandler } from 'express';
import type { Logger } from '../../lib/logger.js';

/** One log line per request: method, path without query (it may hold a CSRF token), status, time. */
export function requestLog(log: Logger): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      log.info('request', {
        method: req.method,
        path: req.path,
        status: res.statusCode,
        ms: Number((process.hrtime.bigint() - started) / 1_000_000n),
        user: res.locals.user ?? null,
        ip: req.ip ?? null,
      });
    });
    next();
  };
}
