import type { EnrollToken } from '../domain.js';
import type { Queryable } from './database.js';

interface TokenRow {
  id: number;
  name: string;
  token_hash: string;
  created_by: string;
  created_at: string;
  expires_at: string;
  used_at: string | null;
  server_id: number | null;
}

function toToken(r: TokenRow): EnrollToken {
  return { id: r.id, name: r.name, createdBy: r.created_by, createdAt: r.created_at, expiresAt: r.expires_at, usedAt: r.used_at, serverId: r.server_id };
}

/** One-time enrollment tokens, each for one server name; only their hashes are stored. */
export class EnrollTokensRepo {
  constructor(private readonly db: Queryable) {}

  async insert(t: { name: string; tokenHash: string; createdBy: string; createdAt: string; expiresAt: string }): Promise<number> {
    const row = await this.db.get<{ id: number }>('INSERT INTO enroll_tokens (name, token_hash, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?) RETURNING id',
      [t.name, t.tokenHash, t.createdBy, t.createdAt, t.expiresAt]);
    return (row as { id: number }).id;
  }

  async findByHash(tokenHash: string): Promise<EnrollToken | null> {
    const row = await this.db.get<TokenRow>('SELECT * FROM enroll_tokens WHERE token_hash = ?', [tokenHash]);
    return row ? toToken(row) : null;
  }

  async list(): Promise<EnrollToken[]> {
    return (await this.db.all<TokenRow>('SELECT * FROM enroll_tokens ORDER BY id DESC')).map(toToken);
  }

  /** Spends a token; false when it was already spent (two agents racing with one token: one wins). */
  async use(id: number, at: string): Promise<boolean> {
    return (await this.db.run('UPDATE enroll_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL', [at, id])).changes > 0;
  }

  async setServer(id: number, serverId: number): Promise<void> {
    await this.db.run('UPDATE enroll_tokens SET server_id = ? WHERE id = ?', [serverId, id]);
  }

  async delete(id: number): Promise<boolean> {
    return (await this.db.run('DELETE FROM enroll_tokens WHERE id = ?', [id])).changes > 0;
  }
}
