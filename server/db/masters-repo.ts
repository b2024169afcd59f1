import type { Queryable } from './database.js';

/** The masters of one PostgreSQL database, each proving it is alive once a second. */
export class MastersRepo {
  constructor(private readonly db: Queryable) {}

  async beat(id: string, name: string, now: number): Promise<void> {
    await this.db.run('INSERT INTO masters (id, name, seen_at) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at', [id, name, now]);
  }

  /** The masters heard from since `since` (ms); rows silent for a day are dropped on the way. */
  async alive(since: number): Promise<Set<string>> {
    await this.db.run('DELETE FROM masters WHERE seen_at < ?', [since - 86_400_000]);
    return new Set((await this.db.all<{ id: string }>('SELECT id FROM masters WHERE seen_at >= ?', [since])).map((r) => r.id));
  }

  async leave(id: string): Promise<void> {
    await this.db.run('DELETE FROM masters WHERE id = ?', [id]);
  }
}
