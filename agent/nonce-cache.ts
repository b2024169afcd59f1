import { ExpiringSet } from '../lib/expiring-set.js';
import { MAX_SKEW_MS } from '../lib/request-signing.js';
import { readJson, writeJsonAtomic } from './files.js';

/**
 * The nonces of the master's signed calls seen within the signatures' lifetime: a call replayed
 * (by someone who recorded it on the network) is refused instead of answered again. Kept in
 * DATA/seen-nonces.json too, so a restart of the agent does not open a window for replays (the
 * master's calls are rare: a write each costs nothing).
 */
export class NonceCache {
  private readonly seen: ExpiringSet;

  constructor(private readonly file: string | null = null, ttlMs = 2 * MAX_SKEW_MS, max = 100_000) {
    this.seen = new ExpiringSet(ttlMs, max);
  }

  async load(now = Date.now()): Promise<void> {
    if (this.file) this.seen.restore(await readJson<unknown>(this.file).catch(() => null), now);
  }

  /** True the first time a nonce is seen within the lifetime; false for a replay. */
  async remember(nonce: string, now = Date.now()): Promise<boolean> {
    if (!this.seen.add(nonce, now)) return false;
    if (this.file) await writeJsonAtomic(this.file, this.seen.list());
    return true;
  }
}
