import { TooManyRequestsError } from '../errors.js';
import { addressKey } from '../services/login-throttle.js';

export interface FailureGateOptions {
  windowMs: number;
  /** Failed attempts answered per address per window; past them every answer is 429. */
  limit: number;
  message: string;
  /** Addresses remembered at most; past it the oldest are forgotten (a spray from many addresses). */
  maxAddresses?: number;
}

interface Failures {
  count: number;
  resetAt: number;
}

/**
 * Limits guessing (of the enrollment token) per client address (per /64 for IPv6), whatever the
 * concurrency: a guess is only worth something when its answer says whether it was right, and past
 * `limit` failures in the window every answer from that address is a 429, right or wrong,
 * including for guesses that were already being checked when the limit was reached. Successful
 * attempts never count, so a thousand agents enrolling together behind one NAT are not mistaken
 * for guessing. Only addresses that failed are remembered, in insertion order, at most
 * `maxAddresses` of them: no call scans the whole table.
 */
export class FailureGate {
  private readonly failures = new Map<string, Failures>();

  constructor(private readonly options: FailureGateOptions) {}

  private current(key: string, now: number): Failures | null {
    const entry = this.failures.get(key);
    if (entry && entry.resetAt <= now) {
      this.failures.delete(key);
      return null;
    }
    return entry ?? null;
  }

  private refusal(entry: Failures, now: number): Error {
    return Object.assign(new TooManyRequestsError(this.options.message), { retryAfter: Math.ceil((entry.resetAt - now) / 1000) });
  }

  /** Throws the 429 when this address has used up its failures. */
  assertOpen(ip: string, now = Date.now()): void {
    const entry = this.current(addressKey(ip), now);
    if (entry && entry.count >= this.options.limit) throw this.refusal(entry, now);
  }

  /** A wrong attempt: the error to answer with, `wrong` itself, or the 429 when it is past the limit. */
  failed(ip: string, wrong: Error, now = Date.now()): Error {
    const key = addressKey(ip);
    let entry = this.current(key, now);
    if (!entry) {
      // Oldest first: drop expired entries, and the oldest ones past the bound.
      for (const [k, e] of this.failures) {
        if (e.resetAt > now && this.failures.size < (this.options.maxAddresses ?? 100_000)) break;
        this.failures.delete(k);
      }
      entry = { count: 0, resetAt: now + this.options.windowMs };
      this.failures.set(key, entry);
    }
    entry.count++;
    return entry.count > this.options.limit ? this.refusal(entry, now) : wrong;
  }
}
