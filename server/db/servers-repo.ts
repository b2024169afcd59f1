import type { AgentStatus } from '../../lib/agent-protocol.js';
import type { ServerMode, ServerRequest, SlaveRecord, StagedPackage } from '../domain.js';
import type { Queryable } from './database.js';

interface ServerRow {
  id: number;
  name: string;
  mode: ServerMode;
  address: string | null;
  product: string | null;
  version: string | null;
  public_key: string | null;
  key_fingerprint: string | null;
  staged_json: string;
  free_disk_bytes: number | null;
  last_seen: string | null;
  enrolled_at: string;
  requested_from: string | null;
  accepted_by: string | null;
  accepted_at: string | null;
  requested_mode: ServerMode | null;
  requested_address: string | null;
  change_state: 'pending' | 'rejected' | null;
  clock_offset_ms: number | null;
}

function toSlave(row: ServerRow): SlaveRecord {
  return {
    id: row.id,
    name: row.name,
    mode: row.mode,
    address: row.address,
    product: row.product,
    version: row.version,
    publicKey: row.public_key,
    keyFingerprint: row.key_fingerprint,
    staged: JSON.parse(row.staged_json) as StagedPackage[],
    freeDiskBytes: row.free_disk_bytes,
    lastSeen: row.last_seen,
    enrolledAt: row.enrolled_at,
    requestedFrom: row.requested_from,
    acceptedBy: row.accepted_by,
    acceptedAt: row.accepted_at,
    requestedChange: row.change_state && row.requested_mode ? { mode: row.requested_mode, address: row.requested_address, state: row.change_state } : null,
    clockOffsetMs: row.clock_offset_ms,
  };
}

/** What an accepted server gets from the request (or one-time token) that admitted it. */
export interface Admission {
  name: string;
  mode: ServerMode;
  address: string | null;
  product: string | null;
  version: string | null;
  publicKey: string;
  keyFingerprint: string;
  requestedFrom: string | null;
  acceptedBy: string;
  /** When the agent asked (it was seen then), and when it was accepted. */
  enrolledAt: string;
  at: string;
}

const INSERT_ADMITTED = `INSERT INTO servers (name, mode, address, product, version, secret_hash, public_key, key_fingerprint, staged_json, last_seen, enrolled_at, requested_from, accepted_by, accepted_at)
       VALUES (?, ?, ?, ?, ?, '', ?, ?, '[]', ?, ?, ?, ?, ?)`;

function admittedRow(a: Admission): (string | null)[] {
  return [a.name, a.mode, a.address, a.product, a.version, a.publicKey, a.keyFingerprint, a.enrolledAt, a.enrolledAt, a.requestedFrom, a.acceptedBy, a.at];
}

/** The accepted slave servers of the domain (enrollment requests are in ServerRequestsRepo). */
export class ServersRepo {
  constructor(private readonly db: Queryable) {}

  async list(): Promise<SlaveRecord[]> {
    return (await this.db.all<ServerRow>('SELECT * FROM servers ORDER BY LOWER(name), name')).map(toSlave);
  }

  async findById(id: number): Promise<SlaveRecord | null> {
    const row = await this.db.get<ServerRow>('SELECT * FROM servers WHERE id = ?', [id]);
    return row ? toSlave(row) : null;
  }

  async findByName(name: string): Promise<SlaveRecord | null> {
    const row = await this.db.get<ServerRow>('SELECT * FROM servers WHERE name = ?', [name]);
    return row ? toSlave(row) : null;
  }

  async delete(id: number): Promise<boolean> {
    return (await this.db.run('DELETE FROM servers WHERE id = ?', [id])).changes > 0;
  }

  /**
   * Admits a server: a new row, or, for a name already in the domain, its new key and whereabouts
   * (the administrator decided: a reinstalled machine). The id stays, and so does its history.
   */
  async admit(a: Admission): Promise<number> {
    await this.db.run(
      `${INSERT_ADMITTED}
       ON CONFLICT (name) DO UPDATE SET mode = excluded.mode, address = excluded.address, product = excluded.product, version = excluded.version,
         public_key = excluded.public_key, key_fingerprint = excluded.key_fingerprint, staged_json = '[]', free_disk_bytes = NULL, last_seen = excluded.last_seen,
         enrolled_at = excluded.enrolled_at, requested_from = excluded.requested_from, accepted_by = excluded.accepted_by, accepted_at = excluded.accepted_at,
         requested_mode = NULL, requested_address = NULL, change_state = NULL, clock_offset_ms = NULL`,
      admittedRow(a),
    );
    const row = await this.db.get<{ id: number }>('SELECT id FROM servers WHERE name = ?', [a.name]);
    return row?.id ?? 0;
  }

  /** A server under a name not yet in the domain; null when the name is taken (it was, or just became). */
  async insertNew(a: Admission): Promise<number | null> {
    const row = await this.db.get<{ id: number }>(`${INSERT_ADMITTED} ON CONFLICT (name) DO NOTHING RETURNING id`, admittedRow(a));
    return row?.id ?? null;
  }

  /** What the agent reported about itself; the master never assumes a version. Mode and address are not for the agent to change. */
  async updateStatus(id: number, status: AgentStatus, now: string): Promise<void> {
    await this.db.run(
      'UPDATE servers SET product = ?, version = ?, staged_json = ?, free_disk_bytes = ?, last_seen = ? WHERE id = ?',
      [status.product, status.version, JSON.stringify(status.staged), status.freeDiskBytes, now, id],
    );
  }

  /** Moves last_seen for servers whose status did not change (one statement per 500). */
  async touch(ids: number[], at: string): Promise<void> {
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      await this.db.run(`UPDATE servers SET last_seen = ? WHERE id IN (${chunk.map(() => '?').join(', ')})`, [at, ...chunk]);
    }
  }

  /** The slave's clock minus the master's, as just measured (callers write only when it moved). */
  async setClockOffset(id: number, offsetMs: number): Promise<void> {
    await this.db.run('UPDATE servers SET clock_offset_ms = ? WHERE id = ?', [offsetMs, id]);
  }

  /** Records a mode or address the agent asks for (null: it reports the accepted ones again). */
  async setRequestedChange(id: number, change: { mode: ServerMode; address: string | null } | null): Promise<void> {
    if (change === null) await this.db.run('UPDATE servers SET requested_mode = NULL, requested_address = NULL, change_state = NULL WHERE id = ?', [id]);
    else await this.db.run("UPDATE servers SET requested_mode = ?, requested_address = ?, change_state = 'pending' WHERE id = ?", [change.mode, change.address, id]);
  }

  /** The administrator's answer to a requested change; false when there was none pending. */
  async decideChange(id: number, accept: boolean, by: string, at: string): Promise<boolean> {
    const result = accept
      ? await this.db.run(
        `UPDATE servers SET mode = requested_mode, address = requested_address, requested_mode = NULL, requested_address = NULL, change_state = NULL,
           accepted_by = ?, accepted_at = ? WHERE id = ? AND change_state = 'pending'`, [by, at, id])
      : await this.db.run("UPDATE servers SET change_state = 'rejected' WHERE id = ? AND change_state = 'pending'", [id]);
    return result.changes > 0;
  }
}

interface RequestRow {
  id: number;
  name: string;
  state: 'pending' | 'rejected';
  mode: ServerMode;
  address: string | null;
  product: string | null;
  version: string | null;
  public_key: string;
  key_fingerprint: string;
  requested_from: string | null;
  requested_at: string;
  decided_by: string | null;
  decided_at: string | null;
}

function toRequest(r: RequestRow): ServerRequest {
  return {
    id: r.id, name: r.name, state: r.state, mode: r.mode, address: r.address, product: r.product, version: r.version, publicKey: r.public_key,
    keyFingerprint: r.key_fingerprint, requestedFrom: r.requested_from, requestedAt: r.requested_at, decidedBy: r.decided_by, decidedAt: r.decided_at,
  };
}

/** Enrollments waiting for the administrator, and the ones they refused (so a refused agent stays refused). */
export class ServerRequestsRepo {
  constructor(private readonly db: Queryable) {}

  async list(state?: 'pending' | 'rejected'): Promise<ServerRequest[]> {
    const rows = state
      ? await this.db.all<RequestRow>('SELECT * FROM server_requests WHERE state = ? ORDER BY requested_at, id', [state])
      : await this.db.all<RequestRow>('SELECT * FROM server_requests ORDER BY state, requested_at, id');
    return rows.map(toRequest);
  }

  async findById(id: number): Promise<ServerRequest | null> {
    const row = await this.db.get<RequestRow>('SELECT * FROM server_requests WHERE id = ?', [id]);
    return row ? toRequest(row) : null;
  }

  async find(name: string, keyFingerprint: string): Promise<ServerRequest | null> {
    const row = await this.db.get<RequestRow>('SELECT * FROM server_requests WHERE name = ? AND key_fingerprint = ?', [name, keyFingerprint]);
    return row ? toRequest(row) : null;
  }

  async countPending(): Promise<number> {
    return (await this.db.get<{ n: number }>("SELECT COUNT(*) AS n FROM server_requests WHERE state = 'pending'"))?.n ?? 0;
  }

  /** Pending requests from one address, and under one name (the bounds of what a token holder may queue). */
  async countPendingBy(requestedFrom: string | null, name: string): Promise<{ fromAddress: number; named: number }> {
    const row = await this.db.get<{ from_address: number; named: number }>(
      `SELECT COALESCE(SUM(CASE WHEN requested_from IS NOT DISTINCT FROM ? THEN 1 ELSE 0 END), 0) AS from_address,
         COALESCE(SUM(CASE WHEN name = ? THEN 1 ELSE 0 END), 0) AS named FROM server_requests WHERE state = 'pending'`, [requestedFrom, name]);
    return { fromAddress: row?.from_address ?? 0, named: row?.named ?? 0 };
  }

  /** Rejects every pending request that came from one address; how many. */
  async rejectFrom(requestedFrom: string, by: string, at: string): Promise<number> {
    return (await this.db.run("UPDATE server_requests SET state = 'rejected', decided_by = ?, decided_at = ? WHERE state = 'pending' AND requested_from = ?", [by, at, requestedFrom])).changes;
  }

  /** A new pending request; an agent asking again with the same name and key finds its request as it was. */
  async insert(r: Omit<ServerRequest, 'id' | 'state' | 'decidedBy' | 'decidedAt'>): Promise<ServerRequest> {
    await this.db.run(
      `INSERT INTO server_requests (name, state, mode, address, product, version, public_key, key_fingerprint, requested_from, requested_at)
       VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name, key_fingerprint) DO NOTHING`,
      [r.name, r.mode, r.address, r.product, r.version, r.publicKey, r.keyFingerprint, r.requestedFrom, r.requestedAt],
    );
    return (await this.find(r.name, r.keyFingerprint)) as ServerRequest;
  }

  async reject(id: number, by: string, at: string): Promise<boolean> {
    return (await this.db.run("UPDATE server_requests SET state = 'rejected', decided_by = ?, decided_at = ? WHERE id = ? AND state = 'pending'", [by, at, id])).changes > 0;
  }

  async delete(id: number): Promise<boolean> {
    return (await this.db.run('DELETE FROM server_requests WHERE id = ?', [id])).changes > 0;
  }
}
