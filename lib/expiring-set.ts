/**
 * Values seen recently (nonces, spent challenges), each kept for `ttlMs`, at most `max` of them:
 * the one rule behind every "refused when heard twice" of the project. Entries are kept in the
 * order they were added, which is the order they expire, so pruning looks only at the oldest.
 */
export class ExpiringSet {
  private readonly entries = new Map<string, number>();

  constructor(private readonly ttlMs: number, private readonly max: number) {}

  /** True the first time a value is seen within its lifetime; false when it is heard again. */
  add(value: string, now = Date.now()): boolean {
    const expiry = this.entries.get(value);
    if (expiry !== undefined && expiry > now) return false;
    // Past the bound, the oldest go first: they are the closest to expiring anyway.
    for (const [old, until] of this.entries) {
      if (until > now && this.entries.size < this.max) break;
      this.entries.delete(old);
    }
    this.entries.delete(value);
    this.entries.set(value, now + this.ttlMs);
    return true;
  }

  /** [value, expiry] pairs, oldest first (to save them). */
  list(): [string, number][] {
    return [...this.entries];
  }

  /** Takes back saved pairs, dropping the expired ones. */
  restore(pairs: unknown, now = Date.now()): void {
    if (!Array.isArray(pairs)) return;
    for (const pair of pairs as unknown[]) {
      if (Array.isArray(pair) && typeof pair[0] === 'string' && typeof pair[1] === 'number' && pair[1] > now) this.entries.set(pair[0], pair[1]);
    }
  }
}
