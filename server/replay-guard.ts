import { MemorySpentSet, type SpentSet } from './cluster/spent-set.js';

/**
 * Refuses a session call heard twice. Each call carries the time on the master's clock (the agent
 * learns its offset when it opens the session, so its own clock never matters) and a nonce, both
 * under the call's MAC. A call more than WINDOW_MS off is refused; within the window, a nonce seen
 * once from that server is refused. One master keeps the nonces of the last two windows in memory
 * (at most a million); the masters of one PostgreSQL database share them in its spent_tokens table.
 */
export const WINDOW_MS = 60_000;

export const NONCE_TTL_MS = 2 * WINDOW_MS;

export class ReplayGuard {
  constructor(private readonly seen: SpentSet = new MemorySpentSet(NONCE_TTL_MS, 1_000_000)) {}

  /** null when the call is fresh, else why it is refused. */
  async check(serverId: number, nonce: string, time: number, now = Date.now()): Promise<string | null> {
    if (!Number.isFinite(time) || Math.abs(now - time) > WINDOW_MS) {
      return 'This call is stamped too far from the master\'s time (a recorded call, or a session opened long ago); open a new session';
    }
    return (await this.seen.add(`${serverId} ${nonce}`, now)) ? null : 'This call was already received once (a replay is refused)';
  }
}
