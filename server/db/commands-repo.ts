import type { Command, CommandState } from '../domain.js';
import type { Queryable, SqlValue } from './database.js';

interface CommandRow {
  id: string;
  server_id: number | null;
  server_name: string;
  type: Command['type'];
  package_id: number | null;
  package_name: string;
  package_sha256: string;
  package_size: number;
  product: string;
  version: string;
  allow_downgrade: number;
  state: CommandState;
  message: string;
  version_before: string | null;
  version_after: string | null;
  attempts: number;
  next_attempt_at: string | null;
  created_at: string;
  delivered_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  updated_at: string;
}

function toCommand(r: CommandRow): Command {
  return {
    id: r.id, serverId: r.server_id, serverName: r.server_name, type: r.type, packageId: r.package_id, packageName: r.package_name,
    packageSha256: r.package_sha256, packageSize: r.package_size, product: r.product, version: r.version, allowDowngrade: r.allow_downgrade === 1,
    state: r.state, message: r.message, versionBefore: r.version_before, versionAfter: r.version_after, attempts: r.attempts,
    nextAttemptAt: r.next_attempt_at, createdAt: r.created_at, deliveredAt: r.delivered_at, startedAt: r.started_at,
    finishedAt: r.finished_at, updatedAt: r.updated_at,
  };
}

const OPEN = "('queued', 'delivered', 'running')";

/** Field names of Command that an update may change, with their columns. */
const COLUMNS: Partial<Record<keyof Command, string>> = {
  state: 'state', message: 'message', versionBefore: 'version_before', versionAfter: 'version_after', attempts: 'attempts',
  nextAttemptAt: 'next_attempt_at', deliveredAt: 'delivered_at', startedAt: 'started_at', finishedAt: 'finished_at',
};

export class CommandsRepo {
  constructor(private readonly db: Queryable) {}

  async insert(c: Command): Promise<void> {
    await this.db.run(
      `INSERT INTO commands (id, server_id, server_name, type, package_id, package_name, package_sha256, package_size, product, version,
         allow_downgrade, state, message, version_before, version_after, attempts, next_attempt_at, created_at, delivered_at, started_at, finished_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [c.id, c.serverId, c.serverName, c.type, c.packageId, c.packageName, c.packageSha256, c.packageSize, c.product, c.version,
        c.allowDowngrade ? 1 : 0, c.state, c.message, c.versionBefore, c.versionAfter, c.attempts, c.nextAttemptAt, c.createdAt,
        c.deliveredAt, c.startedAt, c.finishedAt, c.updatedAt],
    );
  }

  async findById(id: string): Promise<Command | null> {
    const row = await this.db.get<CommandRow>('SELECT * FROM commands WHERE id = ?', [id]);
    return row ? toCommand(row) : null;
  }

  /** Changes the given fields; with `from`, only while the command is still in one of those states. */
  async update(id: string, changes: Partial<Command>, from?: CommandState[]): Promise<boolean> {
    const sets: string[] = ['updated_at = ?'];
    const params: SqlValue[] = [changes.updatedAt ?? new Date().toISOString()];
    for (const [field, column] of Object.entries(COLUMNS) as [keyof Command, string][]) {
      if (field in changes) {
        sets.push(`${column} = ?`);
        params.push(changes[field] as SqlValue);
      }
    }
    let sql = `UPDATE commands SET ${sets.join(', ')} WHERE id = ?`;
    params.push(id);
    if (from) {
      sql += ` AND state IN (${from.map(() => '?').join(', ')})`;
      params.push(...from);
    }
    return (await this.db.run(sql, params)).changes > 0;
  }

  /** Work the agent has not finished: what a mailbox poll hands out (again, until it reports). */
  async openForServer(serverId: number): Promise<Command[]> {
    return (await this.db.all<CommandRow>(`SELECT * FROM commands WHERE server_id = ? AND state IN ('queued', 'delivered') ORDER BY created_at, id`, [serverId])).map(toCommand);
  }

  async listForServer(serverId: number): Promise<Command[]> {
    return (await this.db.all<CommandRow>('SELECT * FROM commands WHERE server_id = ? ORDER BY created_at, id', [serverId])).map(toCommand);
  }

  /** Commands for bidirectional slaves due for (re)delivery. */
  async dueForPush(now: string, redeliverBefore: string, limit: number): Promise<Command[]> {
    return (await this.db.all<CommandRow>(
      `SELECT c.* FROM commands c JOIN servers s ON s.id = c.server_id
       WHERE s.mode = 'bidirectional'
         AND ((c.state = 'queued' AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= ?))
           OR (c.state = 'delivered' AND c.delivered_at <= ?))
       ORDER BY c.created_at, c.id LIMIT ?`, [now, redeliverBefore, limit])).map(toCommand);
  }

  async serverMayDownload(serverId: number, sha256: string): Promise<boolean> {
    return (await this.db.get(`SELECT 1 FROM commands WHERE server_id = ? AND package_sha256 = ? AND state IN ${OPEN}`, [serverId, sha256])) !== undefined;
  }

  async packageInUse(packageId: number): Promise<boolean> {
    return (await this.db.get(`SELECT 1 FROM commands WHERE package_id = ? AND state IN ${OPEN}`, [packageId])) !== undefined;
  }
}
