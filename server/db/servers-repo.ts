import type { AgentStatus } from '../../lib/agent-protocol.js';
import type { ServerMode, SlaveRecord, StagedPackage } from '../domain.js';
import type { Queryable } from './database.js';

interface ServerRow {
  id: number;
  name: string;
  mode: ServerMode;
  address: string | null;
  product: string | null;
  version: string | null;
  secret_hash: string;
  staged_json: string;
  free_disk_bytes: number | null;
  last_seen: string | null;
  enrolled_at: string;
}

function toSlave(row: ServerRow): SlaveRecord {
  return {
    id: row.id,
    name: row.name,
    mode: row.mode,
    address: row.address,
    product: row.product,
    version: row.version,
    secretHash: row.secret_hash,
    staged: JSON.parse(row.staged_json) as StagedPackage[],
    freeDiskBytes: row.free_disk_bytes,
    lastSeen: row.last_seen,
    enrolledAt: row.enrolled_at,
  };
}

export class ServersRepo {
  constructor(private readonly db: Queryable) {}

  async list(): Promise<SlaveRecord[]> {
    return (await this.db.all<ServerRow>('SELECT * FROM servers ORDER BY name COLLATE NOCASE')).map(toSlave);
  }

  async findById(id: number): Promise<SlaveRecord | null> {
    const row = await this.db.get<ServerRow>('SELECT * FROM servers WHERE id = ?', [id]);
    return row ? toSlave(row) : null;
  }

  async delete(id: number): Promise<boolean> {
    return (await this.db.run('DELETE FROM servers WHERE id = ?', [id])).changes > 0;
  }

  async findByName(name: string): Promise<SlaveRecord | null> {
    const row = await this.db.get<ServerRow>('SELECT * FROM servers WHERE name = ?', [name]);
    return row ? toSlave(row) : null;
  }

  /** A new slave, or a new identity for a slave that enrolls again under its name. */
  async upsertEnrollment(status: AgentStatus, secretHash: string, now: string): Promise<number> {
    await this.db.run(
      `INSERT INTO servers (name, mode, address, product, version, secret_hash, staged_json, free_disk_bytes, last_seen, enrolled_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET mode = excluded.mode, address = excluded.address, product = excluded.product,
         version = excluded.version, secret_hash = excluded.secret_hash, staged_json = excluded.staged_json,
         free_disk_bytes = excluded.free_disk_bytes, last_seen = excluded.last_seen, enrolled_at = excluded.enrolled_at`,
      [status.name, status.mode, status.address, status.product, status.version, secretHash, JSON.stringify(status.staged), status.freeDiskBytes, now, now],
    );
    const row = await this.db.get<{ id: number }>('SELECT id FROM servers WHERE name = ?', [status.name]);
    return row?.id ?? 0;
  }

  /** What the agent reported about itself; the master never assumes a version. */
  async updateStatus(id: number, status: AgentStatus, now: string): Promise<void> {
    await this.db.run(
      `UPDATE servers SET mode = ?, address = ?, product = ?, version = ?, staged_json = ?, free_disk_bytes = ?, last_seen = ? WHERE id = ?`,
      [status.mode, status.address, status.product, status.version, JSON.stringify(status.staged), status.freeDiskBytes, now, id],
    );
  }

  /** Moves last_seen for servers whose status did not change (one statement per 500). */
  async touch(ids: number[], at: string): Promise<void> {
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      await this.db.run(`UPDATE servers SET last_seen = ? WHERE id IN (${chunk.map(() => '?').join(', ')})`, [at, ...chunk]);
    }
  }
}
