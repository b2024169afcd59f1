/**
 * Refuses a session call heard twice. Each call carries the time on the master's clock (the agent
 * learns its offset when it opens the session, so its own clock never matters) and a nonce, both
 * under the call's MAC. A call more than WINDOW_MS off is refused; within the window, a nonce seen
 * once from that server is refused. Memory: the nonces of the last two windows, per server.
 */
export const WINDOW_MS = 60_000;

export class ReplayGuard {
  private readonly seen = new Map<number, Map<string, number>>();
  private size = 0;

  constructor(private readonly maxEntries = 1_000_000) {}

  /** null when the call is fresh, else why it is refused. */
  check(serverId: number, nonce: string, time: number, now = Date.now()): string | null {
    if (!Number.isFinite(time) || Math.abs(now - time) > WINDOW_MS) {
      return 'This call is stamped too far from the master\'s time (a recorded call, or a session opened long ago); open a new session';
    }
    let nonces = this.seen.get(serverId);
    if (!nonces) {
      nonces = new Map();
      this.seen.set(serverId, nonces);
    }
    if (nonces.has(nonce)) return 'This call was already received once (a replay is refused)';
    for (const [old, at] of nonces) {
      if (at >= now - 2 * WINDOW_MS) break;
      nonces.delete(old);
      this.size--;
    }
    // Past the bound (a flood of genuine calls from many servers), forget the oldest servers' nonces:
    // their calls are then refused by their time anyway once out of the window.
    if (this.size >= this.maxEntries) {
      for (const [id, map] of this.seen) {
        this.size -= map.size;
        this.seen.delete(id);
        if (this.size < this.maxEntries / 2) break;
      }
      nonces = new Map();
      this.seen.set(serverId, nonces);
    }
    nonces.set(nonce, now);
    this.size++;
    return null;
  }
}
