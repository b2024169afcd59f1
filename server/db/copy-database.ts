import { ConfigurationError } from '../../lib/errors.js';
import type { Database, Queryable, SqlValue } from './database.js';

/** The tables to copy, parents before children (foreign keys), each with the column it is ordered by. */
const TABLES: { name: string; key: string; serial: boolean }[] = [
  { name: 'settings', key: 'key', serial: false },
  { name: 'packages', key: 'id', serial: true },
  { name: 'servers', key: 'id', serial: true },
  { name: 'sessions', key: 'id_hash', serial: false },
  { name: 'operations', key: 'id', serial: true },
  { name: 'commands', key: 'id', serial: false },
  { name: 'command_events', key: 'id', serial: true },
  { name: 'server_requests', key: 'id', serial: true },
  { name: 'enroll_tokens', key: 'id', serial: true },
];
/** Rows per INSERT: well under PostgreSQL's 65,535 parameters for the widest table (28 columns). */
const BATCH = 500;

export interface CopyReport {
  rows: Record<string, number>;
}

/**
 * Copies a master's database (a SQLite file, read as it is) into an empty PostgreSQL database, in
 * one transaction: all of it or nothing. Rows keep their ids (operations and servers keep their
 * numbers, command ids stay what agents hold), then each id sequence moves past the largest id.
 * Operations refer to earlier operations (retry_of): they go in id order, so the earlier one is there.
 */
export async function copyDatabase(from: Database, to: Database, extraSettings: Record<string, string> = {}): Promise<CopyReport> {
  if (to.engine !== 'postgres') throw new ConfigurationError('the copy goes into a PostgreSQL database (--to postgres://…)');
  const [fromVersion, toVersion] = await Promise.all([from.schemaVersion(), to.schemaVersion()]);
  if (fromVersion !== toVersion) throw new ConfigurationError(`the two databases have different schema versions (${fromVersion} and ${toVersion}): run the same Propagator on both`);
  for (const t of TABLES) {
    const row = await to.get<{ n: number }>(`SELECT COUNT(*) AS n FROM ${t.name}`);
    if ((row?.n ?? 0) > 0) throw new ConfigurationError(`the PostgreSQL database is not empty (${t.name} has ${row?.n} rows): copy into a new database, which no master has used`);
  }
  const rows: Record<string, number> = {};
  await to.transaction(async (tx) => {
    for (const t of TABLES) {
      rows[t.name] = await copyTable(from, tx, t.name, t.key);
      if (t.serial) await tx.get(`SELECT setval(pg_get_serial_sequence('${t.name}', 'id'), COALESCE((SELECT MAX(id) FROM ${t.name}), 0) + 1, false)`);
    }
    for (const [key, value] of Object.entries(extraSettings)) {
      await tx.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING', [key, value]);
    }
  });
  return { rows };
}

async function copyTable(from: Queryable, to: Queryable, table: string, key: string): Promise<number> {
  let copied = 0;
  let after: SqlValue | undefined;
  for (;;) {
    // By pages in key order: a table of millions of events is never in memory at once.
    const page = await from.all<Record<string, SqlValue>>(
      `SELECT * FROM ${table} ${after === undefined ? '' : `WHERE ${key} > ?`} ORDER BY ${key} LIMIT ${BATCH}`, after === undefined ? [] : [after]);
    if (page.length === 0) return copied;
    const columns = Object.keys(page[0] as object);
    const values = page.map(() => `(${columns.map(() => '?').join(', ')})`).join(', ');
    await to.run(`INSERT INTO ${table} (${columns.join(', ')}) VALUES ${values}`, page.flatMap((row) => columns.map((c) => row[c] ?? null)));
    copied += page.length;
    after = (page[page.length - 1] as Record<string, SqlValue>)[key];
  }
}
