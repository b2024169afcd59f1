import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { ConfigurationError } from '../../lib/errors.js';
import type { Database, Params, Queryable } from './database.js';
import { withoutPassword } from './database.js';
import { migrate } from './migrator.js';

/** bigint (COUNT, SUM, sizes) and numeric arrive as text from pg: they are numbers here (below 2^53). */
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === pg.types.builtins.INT8 || oid === pg.types.builtins.NUMERIC) return (text: string) => Number(text);
    return format ? pg.types.getTypeParser(oid, format) : pg.types.getTypeParser(oid);
  }) as typeof pg.types.getTypeParser,
};

/** One number for "the migrations" among advisory locks ("prop" in ASCII). */
const MIGRATION_LOCK = 0x70726f70;

/** 40001 serialization_failure, 40P01 deadlock_detected: the transaction may simply run again. */
const RETRYABLE = new Set(['40001', '40P01']);
const MAX_ATTEMPTS = 20;

const placeholderCache = new Map<string, string>();

/**
 * `?` → `$1, $2…`, outside quoted strings and identifiers, so the repositories write one SQL for
 * both engines. Statements repeat, so the translations are kept (bounded: IN lists vary in length).
 */
export function toPositional(sql: string): string {
  const cached = placeholderCache.get(sql);
  if (cached !== undefined) return cached;
  let out = '';
  let n = 0;
  let quote: string | null = null;
  for (const ch of sql) {
    if (quote) {
      if (ch === quote) quote = null;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
    } else if (ch === '?') {
      out += `$${++n}`;
      continue;
    }
    out += ch;
  }
  if (placeholderCache.size >= 2000) placeholderCache.clear();
  placeholderCache.set(sql, out);
  return out;
}

/** Repositories over one connection of pg's (a pool, a pooled client, or a client of one's own). */
export function queryable(client: pg.Pool | pg.PoolClient | pg.Client): Queryable {
  return {
    run: async (sql, params = []) => ({ changes: (await client.query(toPositional(sql), params)).rowCount ?? 0 }),
    get: async <T>(sql: string, params: Params = []) => (await client.query(toPositional(sql), params)).rows[0] as T | undefined,
    all: async <T>(sql: string, params: Params = []) => (await client.query(toPositional(sql), params)).rows as T[],
  };
}

function errorCode(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

/**
 * The master's database on PostgreSQL, shared by several masters. Statements outside transactions
 * run on any pooled connection; transactions are serializable (what SQLite's single writer gave
 * for free), and one aborted because another master touched the same rows runs again.
 */
export class PostgresDatabase implements Database {
  readonly engine = 'postgres';
  readonly description: string;
  private readonly q: Queryable;

  private constructor(private readonly pool: pg.Pool, url: string) {
    this.description = withoutPassword(url);
    this.q = queryable(pool);
  }

  static async open(url: string, options: { onIdleError?: (err: Error) => void; max?: number } = {}): Promise<PostgresDatabase> {
    const pool = new pg.Pool({ connectionString: url, types: TYPES, max: options.max ?? 10, connectionTimeoutMillis: 10_000 });
    // A connection that breaks while idle (the server restarted) is dropped from the pool; without a
    // listener the error would end the process.
    pool.on('error', (err) => options.onIdleError?.(err));
    const database = new PostgresDatabase(pool, url);
    try {
      await database.migrateExclusively();
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw new ConfigurationError(`cannot use the database ${database.description}: ${(err as Error).message}`, { cause: err });
    }
    return database;
  }

  run(sql: string, params?: Params) {
    return this.q.run(sql, params);
  }

  get<T>(sql: string, params?: Params) {
    return this.q.get<T>(sql, params);
  }

  all<T>(sql: string, params?: Params) {
    return this.q.all<T>(sql, params);
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const client = await this.pool.connect();
      let broken: Error | undefined;
      try {
        await client.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
        const result = await fn(queryable(client));
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch((rollbackError: Error) => (broken = rollbackError));
        if (!RETRYABLE.has(errorCode(err) ?? '') || attempt >= MAX_ATTEMPTS) throw err;
      } finally {
        client.release(broken);
      }
      // Two masters that collided would collide again at once: wait a little, at random.
      await sleep(Math.random() * Math.min(200, 5 * 2 ** attempt));
    }
  }

  async schemaVersion(): Promise<number> {
    const table = await this.get<{ name: string | null }>("SELECT to_regclass('propagator_migrations')::text AS name");
    if (!table?.name) return 0;
    return (await this.get<{ v: number | null }>('SELECT MAX(version) AS v FROM propagator_migrations'))?.v ?? 0;
  }

  /**
   * Masters starting together on an empty database: the first takes the advisory lock and
   * migrates, the others wait for it and then find nothing left to do. The lock belongs to the
   * connection, so a master killed while migrating releases it (its transaction rolls back).
   */
  private async migrateExclusively(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
      try {
        await client.query(`CREATE TABLE IF NOT EXISTS propagator_migrations (
          version integer PRIMARY KEY, name text NOT NULL, applied_at text NOT NULL, applied_by text NOT NULL)`);
        const tx = queryable(client);
        await migrate({
          engine: 'postgres',
          version: () => this.schemaVersion(),
          apply: async (version, name, statements) => {
            await client.query('BEGIN');
            try {
              for (const s of statements) await tx.run(s.sql, s.bindings);
              await tx.run('INSERT INTO propagator_migrations (version, name, applied_at, applied_by) VALUES (?, ?, ?, ?)',
                [version, name, new Date().toISOString(), `${os.hostname()} pid ${process.pid}`]);
              await client.query('COMMIT');
            } catch (err) {
              await client.query('ROLLBACK').catch(() => undefined);
              throw err;
            }
          },
        });
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
      }
    } finally {
      client.release();
    }
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}
