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
 * Limits failed attempts (a wrong enrollment token) per client address. Each attempt takes a slot
 * when it starts and gives it back when it succeeds, so however many guesses arrive at once, at
 * most `limit` are ever checked per window; successful requests, however many run at once (a
 * thousand agents enrolling together behind one NAT), never count.
 */
export function failureLimiter(options: FailureLimiterOptions): RequestHandler {
  const attempts = new Map<string, { count: number; resetAt: number }>();
  const prune = (now: number) => {
    for (const [key, entry] of attempts) if (entry.resetAt <= now) attempts.delete(key);
  };
  return (req, res, next) => {
    const key = req.ip ?? req.socket.remoteAddress ?? 'unknown';
    const now = Date.now();
    if (attempts.size > 10_000) prune(now);
    let entry = attempts.get(key);
    if (!entry || entry.resetAt <= now) {
      entry = { count: 0, resetAt: now + options.windowMs };
      attempts.set(key, entry);
    }
    if (entry.count >= options.limit) {
      const retryAfter = Math.ceil((entry.resetAt - now) / 1000);
      next(Object.assign(new TooManyRequestsError(options.message), { retryAfter }));
      return;
    }
    entry.count++;
    const taken = entry;
    // Only an answer sent in full gives the slot back: a guesser hanging up early keeps paying.
    res.on('finish', () => {
      if (!options.isFailure(req, res) && taken.count > 0) taken.count--;
    });
    next();
  };
}
