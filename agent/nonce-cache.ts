import { diskErrorCode } from '../lib/disk-errors.js';
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

  /**
   * True the first time a nonce is seen within the lifetime; false for a replay. On a full disk the
   * nonce is kept in memory only (`onDiskError` is told): the call is still taken, so a full disk
   * fails the master's commands with their reason instead of making the agent unreachable; only
   * a restart while the disk is full could forget the nonces of the last 10 minutes.
   */
  async remember(nonce: string, now = Date.now(), onDiskError?: (code: string) => void): Promise<boolean> {
    if (!this.seen.add(nonce, now)) return false;
    if (this.file) {
      await writeJsonAtomic(this.file, this.seen.list()).catch((err: unknown) => {
        const code = diskErrorCode(err);
        if (!code) throw err;
        onDiskError?.(code);
      });
    }
    return true;
  }
}
