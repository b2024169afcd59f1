import type { Request, RequestHandler, Response } from 'express';
import { TooManyRequestsError } from '../errors.js';

export interface FailureLimiterOptions {
  windowMs: number;
  /** Failures allowed per address per window; the next request is refused with 429. */
  limit: number;
  isFailure: (req: Request, res: Response) => boolean;
  message: string;
}

/**
 * Counts only failed attempts (wrong password, wrong token), per client address. Successful
 * requests, however many run at once, never count: a thousand agents enrolling together behind one
 * NAT, or a script calling the API in parallel, are not mistaken for guessing.
 */
export function failureLimiter(options: FailureLimiterOptions): RequestHandler {
  const failures = new Map<string, { count: number; resetAt: number }>();
  const prune = (now: number) => {
    for (const [key, entry] of failures) if (entry.resetAt <= now) failures.delete(key);
  };
  return (req, res, next) => {
    const key = req.ip ?? req.socket.remoteAddress ?? 'unknown';
    const now = Date.now();
    const entry = failures.get(key);
    if (entry && entry.resetAt > now && entry.count >= options.limit) {
      const retryAfter = Math.ceil((entry.resetAt - now) / 1000);
      next(Object.assign(new TooManyRequestsError(options.message), { retryAfter }));
      return;
    }
    res.on('finish', () => {
      if (!options.isFailure(req, res)) return;
      const at = Date.now();
      if (failures.size > 10_000) prune(at);
      const current = failures.get(key);
      if (!current || current.resetAt <= at) failures.set(key, { count: 1, resetAt: at + options.windowMs });
      else current.count++;
    });
    next();
  };
}
