export type SqlValue = string | number | null;
export type Params = SqlValue[];

/**
 * What repositories use; a transaction hands out the same interface. SQL is written once, in the
 * subset SQLite and PostgreSQL share (`?` placeholders, `INSERT … RETURNING id`,
 * `ON CONFLICT … DO UPDATE`, `IS [NOT] DISTINCT FROM`, no COLLATE): each engine's driver runs it.
 */
export interface Queryable {
  run(sql: string, params?: Params): Promise<{ changes: number }>;
  get<T>(sql: string, params?: Params): Promise<T | undefined>;
  all<T>(sql: string, params?: Params): Promise<T[]>;
}

export type DatabaseEngine = 'sqlite' | 'postgres';

/** Where the master's database is: a SQLite file (the default) or a PostgreSQL server. */
export type DatabaseLocation = { engine: 'sqlite'; file: string } | { engine: 'postgres'; url: string };

export interface Database extends Queryable {
  readonly engine: DatabaseEngine;
  /** For messages and logs: the file, or the URL without its password. */
  readonly description: string;
  /**
   * Runs fn in one transaction; any throw rolls everything back. On PostgreSQL the transaction is
   * serializable and retried when the server aborts it for a conflict with another master, so fn
   * must do nothing but database work (it may run more than once).
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  schemaVersion(): Promise<number>;
  close(): Promise<void>;
}

/** A UNIQUE constraint of table.column refused a row (either engine's way of saying so). */
export function isUniqueViolation(err: unknown, table: string, column: string): boolean {
  const e = err as { code?: string; message?: string; constraint?: string; detail?: string };
  if (e.code === 'SQLITE_CONSTRAINT') return /UNIQUE constraint failed/.test(e.message ?? '') && (e.message ?? '').includes(`${table}.${column}`);
  // 23505: unique_violation; constraints are named table_column_unique (see schema.ts).
  return e.code === '23505' && (e.constraint === `${table}_${column}_unique` || (e.detail ?? '').startsWith(`Key (${column})=`));
}

/** "postgres://user:secret@host/db" → "postgres://user@host/db": URLs go in logs and errors. */
export function withoutPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '';
    return parsed.toString().replace(/^(postgres(?:ql)?:\/\/[^@/]*):@/, '$1@');
  } catch {
    return 'postgres://(unreadable URL)';
  }
}
