import type { Queryable } from './database.js';

/**
 * Challenges and call nonces already used, shared by the masters of one PostgreSQL database: a
 * call recorded at one master is refused at every other. Expired rows are purged by the leader.
 */
export class SpentRepo {
  constructor(private readonly db: Queryable) {}

  /** True the first time `key` is spent within its lifetime (an expired row counts as unspent). */
  async add(key: string, expiresAt: number, now: number): Promise<boolean> {
    const row = await this.db.get<{ key: string }>(
      `INSERT INTO spent_tokens (key, expires_at) VALUES (?, ?)
       ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE spent_tokens.expires_at <= ? RETURNING key`,
      [key, expiresAt, now]);
    return row !== undefined;
  }

  async purge(now: number): Promise<number> {
    return (await this.db.run('DELETE FROM spent_tokens WHERE expires_at <= ?', [now])).changes;
  }
}
