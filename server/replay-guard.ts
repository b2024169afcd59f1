import { ExpiringSet } from '../lib/expiring-set.js';

/**
 * Refuses a session call heard twice. Each call carries the time on the master's clock (the agent
 * learns its offset when it opens the session, so its own clock never matters) and a nonce, both
 * under the call's MAC. A call more than WINDOW_MS off is refused; within the window, a nonce seen
 * once from that server is refused. Memory: the nonces of the last two windows, at most a million.
 */
export const WINDOW_MS = 60_000;

export class ReplayGuard {
  private readonly seen: ExpiringSet;

  constructor(maxEntries = 1_000_000) {
    this.seen = new ExpiringSet(2 * WINDOW_MS, maxEntries);
  }

  /** null when the call is fresh, else why it is refused. */
  check(serverId: number, nonce: string, time: number, now = Date.now()): string | null {
    if (!Number.isFinite(time) || Math.abs(now - time) > WINDOW_MS) {
      return 'This call is stamped too far from the master\'s time (a recorded call, or a session opened long ago); open a new session';
    }
    return this.seen.add(`${serverId} ${nonce}`, now) ? null : 'This call was already received once (a replay is refused)';
  }
}
