import { ExpiringSet } from '../../lib/expiring-set.js';
import type { SpentRepo } from '../db/spent-repo.js';

/**
 * Values that may be used once within their lifetime (session challenges, call nonces). One
 * master keeps them in memory; several masters share them in the database, or a call recorded at
 * one master could be played again at another.
 */
export interface SpentSet {
  /** True the first time `value` is seen within its lifetime; false when it is heard again. */
  add(value: string, now?: number): Promise<boolean>;
}

export class MemorySpentSet implements SpentSet {
  private readonly set: ExpiringSet;

  constructor(ttlMs: number, max: number) {
    this.set = new ExpiringSet(ttlMs, max);
  }

  async add(value: string, now = Date.now()): Promise<boolean> {
    return this.set.add(value, now);
  }
}

export class SharedSpentSet implements SpentSet {
  constructor(private readonly repo: SpentRepo, private readonly ttlMs: number, private readonly kind: string) {}

  add(value: string, now = Date.now()): Promise<boolean> {
    return this.repo.add(`${this.kind} ${value}`, now + this.ttlMs, now);
  }
}
