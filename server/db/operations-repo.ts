import type { Operation, OperationState } from '../domain.js';
import type { Queryable, SqlValue } from './database.js';

interface OperationRow {
  id: number;
  action: Operation['action'];
  package_id: number | null;
  package_name: string;
  product: string;
  version: string;
  allow_downgrade: number;
  state: OperationState;
  created_by: string;
  created_at: string;
  finished_at: string | null;
  retry_of: number | null;
}

function toOperation(r: OperationRow): Operation {
  return {
    id: r.id, action: r.action, packageId: r.package_id, packageName: r.package_name, product: r.product, version: r.version,
    allowDowngrade: r.allow_downgrade === 1, state: r.state, createdBy: r.created_by, createdAt: r.created_at, finishedAt: r.finished_at, retryOf: r.retry_of,
  };
}

export class OperationsRepo {
  constructor(private readonly db: Queryable) {}

  async insert(op: Omit<Operation, 'id'>): Promise<number> {
    const row = await this.db.get<{ id: number }>(
      `INSERT INTO operations (action, package_id, package_name, product, version, allow_downgrade, state, created_by, created_at, finished_at, retry_of)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
      [op.action, op.packageId, op.packageName, op.product, op.version, op.allowDowngrade ? 1 : 0, op.state, op.createdBy, op.createdAt, op.finishedAt, op.retryOf],
    );
    return (row as { id: number }).id;
  }

  async findById(id: number): Promise<Operation | null> {
    const row = await this.db.get<OperationRow>('SELECT * FROM operations WHERE id = ?', [id]);
    return row ? toOperation(row) : null;
  }

  /** Newest first. */
  async list(filter: { state?: OperationState; limit: number; offset: number }): Promise<{ operations: Operation[]; total: number }> {
    const where = filter.state ? 'WHERE state = ?' : '';
    const params: SqlValue[] = filter.state ? [filter.state] : [];
    const rows = await this.db.all<OperationRow>(`SELECT * FROM operations ${where} ORDER BY id DESC LIMIT ? OFFSET ?`, [...params, filter.limit, filter.offset]);
    const total = (await this.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM operations ${where}`, params))?.n ?? 0;
    return { operations: rows.map(toOperation), total };
  }

  async running(): Promise<Operation[]> {
    return (await this.db.all<OperationRow>("SELECT * FROM operations WHERE state = 'running' ORDER BY id")).map(toOperation);
  }

  async finish(id: number, state: OperationState, at: string): Promise<boolean> {
    return (await this.db.run("UPDATE operations SET state = ?, finished_at = ? WHERE id = ? AND state = 'running'", [state, at, id])).changes > 0;
  }
}
