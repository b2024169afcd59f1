import { TooManyRequestsError } from '../errors.js';

export interface FailureGateOptions {
  windowMs: number;
  /** Failed attempts answered per address per window; past them every answer is 429. */
  limit: number;
  message: string;
}

/**
 * Limits guessing (of the enrollment token) per client address, whatever the concurrency: a guess
 * is only worth something when its answer says whether it was right, and past `limit` failures in
 * the window every answer from that address is a 429, right or wrong, including for guesses that
 * were already being checked when the limit was reached. Successful attempts never count, so a
 * thousand agents enrolling together behind one NAT are not mistaken for guessing.
 */
export class FailureGate {
  private readonly failures = new Map<string, { count: number; resetAt: number }>();

  constructor(private readonly options: FailureGateOptions) {}

  private entry(key: string, now: number): { count: number; resetAt: number } {
    if (this.failures.size > 10_000) {
      for (const [k, e] of this.failures) if (e.resetAt <= now) this.failures.delete(k);
    }
    let entry = this.failures.get(key);
    if (!entry || entry.resetAt <= now) {
      entry = { count: 0, resetAt: now + this.options.windowMs };
      this.failures.set(key, entry);
    }
    return entry;
  }

  private refusal(entry: { resetAt: number }, now: number): Error {
    return Object.assign(new TooManyRequestsError(this.options.message), { retryAfter: Math.ceil((entry.resetAt - now) / 1000) });
  }

  /** Throws the 429 when this address has used up its failures. */
  assertOpen(key: string, now = Date.now()): void {
    const entry = this.entry(key, now);
    if (entry.count >= this.options.limit) throw this.refusal(entry, now);
  }

  /** A wrong attempt: the error to answer with, `wrong` itself, or the 429 when it is past the limit. */
  failed(key: string, wrong: Error, now = Date.now()): Error {
    const entry = this.entry(key, now);
    entry.count++;
    return entry.count > this.options.limit ? this.refusal(entry, now) : wrong;
  }
}
