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
}
