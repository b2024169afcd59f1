import type { Session } from '../domain.js';
import type { Queryable } from './database.js';

interface SessionRow {
  id_hash: string;
  csrf_token: string;
  username: string | null;
  created_at: string;
  expires_at: string;
}

export class SessionsRepo {
  constructor(private readonly db: Queryable) {}

  async insert(s: Session): Promise<void> {
    await this.db.run('INSERT INTO sessions (id_hash, csrf_token, username, created_at, expires_at) VALUES (?, ?, ?, ?, ?)',
      [s.idHash, s.csrfToken, s.username, s.createdAt, s.expiresAt]);
  }

  async find(idHash: string, now: string): Promise<Session | null> {
    const row = await this.db.get<SessionRow>('SELECT * FROM sessions WHERE id_hash = ? AND expires_at > ?', [idHash, now]);
    return row ? { idHash: row.id_hash, csrfToken: row.csrf_token, username: row.username, createdAt: row.created_at, expiresAt: row.expires_at } : null;
  }

  async delete(idHash: string): Promise<void> {
    await this.db.run('DELETE FROM sessions WHERE id_hash = ?', [idHash]);
  }

  /** Ends a user's sessions, all of them or all but one. */
  async deleteForUser(username: string, exceptIdHash: string | null): Promise<number> {
    return (await this.db.run('DELETE FROM sessions WHERE username = ? AND id_hash IS DISTINCT FROM ?', [username, exceptIdHash])).changes;
  }

  async deleteExpired(now: string): Promise<number> {
    return (await this.db.run('DELETE FROM sessions WHERE expires_at <= ?', [now])).changes;
  }
}
