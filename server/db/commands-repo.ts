import type { Command, CommandEvent, CommandState } from '../domain.js';
import type { Queryable, SqlValue } from './database.js';

interface CommandRow {
  id: string;
  operation_id: number | null;
  server_id: number | null;
  server_name: string;
  type: Command['type'];
  package_id: number | null;
  package_name: string;
  package_sha256: string;
  payload_sha256: string;
  manifest_sha256: string;
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
  deadline_at: string | null;
  created_at: string;
  delivered_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  updated_at: string;
}

function toCommand(r: CommandRow): Command {
  return {
    id: r.id, operationId: r.operation_id, serverId: r.server_id, serverName: r.server_name, type: r.type, packageId: r.package_id,
    packageName: r.package_name, packageSha256: r.package_sha256, payloadSha256: r.payload_sha256, manifestSha256: r.manifest_sha256, packageSize: r.package_size, product: r.product, version: r.version,
    allowDowngrade: r.allow_downgrade === 1, state: r.state, message: r.message, versionBefore: r.version_before, versionAfter: r.version_after,
    attempts: r.attempts, nextAttemptAt: r.next_attempt_at, deadlineAt: r.deadline_at, createdAt: r.created_at, deliveredAt: r.delivered_at,
    startedAt: r.started_at, finishedAt: r.finished_at, updatedAt: r.updated_at,
  };
}

const OPEN = "('held', 'queued', 'delivered', 'running')";

/** Fields an update may change, with their columns. */
const COLUMNS: Partial<Record<keyof Command, string>> = {
  state: 'state', message: 'message', versionBefore: 'version_before', versionAfter: 'version_after', attempts: 'attempts',
  nextAttemptAt: 'next_attempt_at', deadlineAt: 'deadline_at', deliveredAt: 'delivered_at', startedAt: 'started_at', finishedAt: 'finished_at',
};

/** Commands (an operation's targets) and their state history. Every state change is recorded. */
export class CommandsRepo {
  constructor(private readonly db: Queryable) {}

  async insert(c: Command): Promise<void> {
    await this.db.run(
      `INSERT INTO commands (id, operation_id, server_id, server_name, type, package_id, package_name, package_sha256, payload_sha256, manifest_sha256, package_size, product, version,
         allow_downgrade, state, message, version_before, version_after, attempts, next_attempt_at, deadline_at, created_at, delivered_at, started_at, finished_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [c.id, c.operationId, c.serverId, c.serverName, c.type, c.packageId, c.packageName, c.packageSha256, c.payloadSha256, c.manifestSha256, c.packageSize, c.product, c.version,
        c.allowDowngrade ? 1 : 0, c.state, c.message, c.versionBefore, c.versionAfter, c.attempts, c.nextAttemptAt, c.deadlineAt, c.createdAt,
        c.deliveredAt, c.startedAt, c.finishedAt, c.updatedAt],
    );
    await this.recordEvent(c.id, c.state, c.message, c.createdAt);
  }

  private async recordEvent(commandId: string, state: CommandState, message: string, at: string): Promise<void> {
    await this.db.run('INSERT INTO command_events (command_id, state, message, at) VALUES (?, ?, ?, ?)', [commandId, state, message, at]);
  }

  async findById(id: string): Promise<Command | null> {
    const row = await this.db.get<CommandRow>('SELECT * FROM commands WHERE id = ?', [id]);
    return row ? toCommand(row) : null;
  }

  /** Changes the given fields; with `from`, only while the command is still in one of those states. */
  async update(id: string, changes: Partial<Command>, from?: CommandState[]): Promise<boolean> {
    const now = changes.updatedAt ?? new Date().toISOString();
    const sets: string[] = ['updated_at = ?'];
    const params: SqlValue[] = [now];
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
    const changed = (await this.db.run(sql, params)).changes > 0;
    if (changed && changes.state) await this.recordEvent(id, changes.state, changes.message ?? '', now);
    return changed;
  }

  async events(commandIds: string[]): Promise<CommandEvent[]> {
    if (commandIds.length === 0) return [];
    const rows = await this.db.all<{ command_id: string; state: CommandState; message: string; at: string }>(
      `SELECT command_id, state, message, at FROM command_events WHERE command_id IN (${commandIds.map(() => '?').join(', ')}) ORDER BY id`, commandIds);
    return rows.map((r) => ({ commandId: r.command_id, state: r.state, message: r.message, at: r.at }));
  }

  /** Work a mailbox agent has not finished: what a poll hands out (again, until it reports). */
  async openForServer(serverId: number): Promise<Command[]> {
    return (await this.db.all<CommandRow>(`SELECT * FROM commands WHERE server_id = ? AND state IN ('queued', 'delivered') ORDER BY created_at, id`, [serverId])).map(toCommand);
  }

  async serversWithOpenWork(): Promise<number[]> {
    return (await this.db.all<{ server_id: number }>("SELECT DISTINCT server_id FROM commands WHERE state IN ('queued', 'delivered') AND server_id IS NOT NULL")).map((r) => r.server_id);
  }

  async listForServer(serverId: number): Promise<Command[]> {
    return (await this.db.all<CommandRow>('SELECT * FROM commands WHERE server_id = ? ORDER BY created_at, id', [serverId])).map(toCommand);
  }

  async forOperation(operationId: number): Promise<Command[]> {
    return (await this.db.all<CommandRow>('SELECT * FROM commands WHERE operation_id = ? ORDER BY LOWER(server_name), id', [operationId])).map(toCommand);
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

  /** Bidirectional targets transferring or about to: what the parallel-transfer cap counts. */
  async activeBidirectional(): Promise<number> {
    const row = await this.db.get<{ n: number }>(
      `SELECT COUNT(*) AS n FROM commands c JOIN servers s ON s.id = c.server_id WHERE s.mode = 'bidirectional' AND c.state IN ('queued', 'delivered', 'running')`);
    return row?.n ?? 0;
  }

  async held(limit: number): Promise<Command[]> {
    return (await this.db.all<CommandRow>("SELECT * FROM commands WHERE state = 'held' ORDER BY created_at, id LIMIT ?", [limit])).map(toCommand);
  }

  async overdue(now: string): Promise<Command[]> {
    return (await this.db.all<CommandRow>(`SELECT * FROM commands WHERE state IN ${OPEN} AND deadline_at IS NOT NULL AND deadline_at <= ?`, [now])).map(toCommand);
  }

  async serverMayDownload(serverId: number, sha256: string): Promise<boolean> {
    return (await this.db.get(`SELECT 1 FROM commands WHERE server_id = ? AND package_sha256 = ? AND state IN ${OPEN}`, [serverId, sha256])) !== undefined;
  }

  async packageInUse(packageId: number): Promise<boolean> {
    return (await this.db.get(`SELECT 1 FROM commands WHERE package_id = ? AND state IN ${OPEN}`, [packageId])) !== undefined;
  }

  /** Per-operation counts of command states, for lists of operations. */
  async stateCounts(operationIds: number[]): Promise<Map<number, Record<string, number>>> {
    const result = new Map<number, Record<string, number>>();
    if (operationIds.length === 0) return result;
    const rows = await this.db.all<{ operation_id: number; state: CommandState; n: number }>(
      `SELECT operation_id, state, COUNT(*) AS n FROM commands WHERE operation_id IN (${operationIds.map(() => '?').join(', ')}) GROUP BY operation_id, state`, operationIds);
    for (const r of rows) {
      const counts = result.get(r.operation_id) ?? {};
      counts[r.state] = r.n;
      result.set(r.operation_id, counts);
    }
    return result;
  }
}
