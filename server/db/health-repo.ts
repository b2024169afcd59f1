import type { Queryable } from './database.js';

/** The one row /health writes to prove the database takes writes. */
export class HealthRepo {
  constructor(private readonly db: Queryable) {}

  async touch(now: Date): Promise<void> {
    const { changes } = await this.db.run('UPDATE health_check SET checked_at = ? WHERE id = 1', [now.toISOString()]);
    if (changes !== 1) throw new Error('the health_check row is missing from the database');
  }
}
