import { MAX_SKEW_MS } from '../lib/request-signing.js';
import { readJson, writeJsonAtomic } from './files.js';

/**
 * The nonces of the master's signed calls seen within the signatures' lifetime: a call replayed
 * (by someone who recorded it on the network) is refused instead of answered again. Kept in
 * DATA/seen-nonces.json too, so a restart of the agent does not open a window for replays (the
 * master's calls are rare: a write each costs nothing). Bounded: past the bound the oldest are
 * dropped, which only matters for calls older than the signatures accept anyway.
 */
export class NonceCache {
  private seen = new Map<string, number>();

  constructor(private readonly file: string | null = null, private readonly ttlMs = 2 * MAX_SKEW_MS, private readonly max = 100_000) {}

  async load(now = Date.now()): Promise<void> {
    if (!this.file) return;
    const saved = await readJson<[string, number][]>(this.file).catch(() => null);
    this.seen = new Map((Array.isArray(saved) ? saved : []).filter((e) => Array.isArray(e) && typeof e[0] === 'string' && typeof e[1] === 'number' && e[1] > now));
  }

  /** True the first time a nonce is seen within the lifetime; false for a replay. */
  async remember(nonce: string, now = Date.now()): Promise<boolean> {
    const expiry = this.seen.get(nonce);
    if (expiry !== undefined && expiry > now) return false;
    for (const [key, until] of this.seen) {
      if (until > now && this.seen.size < this.max) break;
      this.seen.delete(key);
    }
    this.seen.delete(nonce);
    this.seen.set(nonce, now + this.ttlMs);
    if (this.file) await writeJsonAtomic(this.file, [...this.seen]);
    return true;
  }
}
