import { chmod } from 'node:fs/promises';
import sqlite3 from 'sqlite3';
import { Mutex } from '../../lib/mutex.js';
import type { Database, Params, Queryable } from './database.js';
import { migrate, type Statement } from './migrator.js';
import { BASELINE_VERSION } from './schema.js';
import { SQLITE_LEGACY_MIGRATIONS } from './sqlite-legacy-migrations.js';

const WRITE = /^\s*(INSERT|UPDATE|DELETE)\b/i;

function raw(db: sqlite3.Database): Queryable {
  return {
    run: (sql, params = []) =>
      new Promise((resolve, reject) => {
        db.run(sql, params, function (this: sqlite3.RunResult, err: Error | null) {
          if (err) reject(err);
          else resolve({ changes: this.changes });
        });
      }),
    get: <T>(sql: string, params: Params = []) =>
      new Promise<T | undefined>((resolve, reject) => {
        // A write (INSERT … RETURNING) runs to its end: sqlite3's get() stops after the first row,
        // and the commit's own error (SQLITE_FULL, say) would be lost with the row still returned.
        if (WRITE.test(sql)) db.all(sql, params, (err: Error | null, rows: T[]) => (err ? reject(err) : resolve(rows[0])));
        else db.get(sql, params, (err: Error | null, row: T | undefined) => (err ? reject(err) : resolve(row)));
      }),
    all: <T>(sql: string, params: Params = []) =>
      new Promise<T[]>((resolve, reject) => {
        db.all(sql, params, (err: Error | null, rows: T[]) => (err ? reject(err) : resolve(rows)));
      }),
  };
}

/**
 * The database holds password and token hashes: owner-only, also when an older version or a
 * hand-made copy left it readable. SQLite gives -wal and -shm the mode of the database file, and
 * they hold recent pages of it, so they get the same.
 */
async function makePrivate(file: string): Promise<void> {
  for (const name of [file, `${file}-wal`, `${file}-shm`]) {
    await chmod(name, 0o600).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}

/**
 * The one SQLite connection of the master. Every statement takes the mutex, so the statements of
 * a transaction are never interleaved with another request's on this shared connection.
 */
export class SqliteDatabase implements Database {
  readonly engine = 'sqlite';
  private readonly mutex = new Mutex();
  private readonly q: Queryable;

  private constructor(private readonly db: sqlite3.Database, readonly file: string) {
    this.q = raw(db);
  }

  get description(): string {
    return this.file;
  }

  static async open(file: string): Promise<SqliteDatabase> {
    await makePrivate(file);
    const db = await new Promise<sqlite3.Database>((resolve, reject) => {
      const handle = new sqlite3.Database(file, (err) => (err ? reject(err) : resolve(handle)));
    });
    const database = new SqliteDatabase(db, file);
    // synchronous = FULL: each commit is fsynced to the WAL before it returns, so what the master
    // acknowledged (an operation's 202, a package's 201, an agent's result) survives a power cut.
    // NORMAL syncs only at checkpoints, and lost the last second of commits. Measured: no cost on
    // mailbox throughput (status reports are written once a second), see docs/PERFORMANCE.md.
    await database.exec('PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;');
    try {
      await database.climbLegacySteps();
      await migrate({ engine: 'sqlite', version: () => database.schemaVersion(), apply: (version, _name, statements) => database.apply(version, statements) });
    } catch (err) {
      await database.close().catch(() => undefined);
      throw err;
    }
    await makePrivate(file);
    return database;
  }

  run(sql: string, params?: Params) {
    return this.mutex.lock(() => this.q.run(sql, params));
  }

  get<T>(sql: string, params?: Params) {
    return this.mutex.lock(() => this.q.get<T>(sql, params));
  }

  all<T>(sql: string, params?: Params) {
    return this.mutex.lock(() => this.q.all<T>(sql, params));
  }

  private execRaw(sql: string): Promise<void> {
    return new Promise((resolve, reject) => this.db.exec(sql, (err) => (err ? reject(err) : resolve())));
  }

  exec(sql: string): Promise<void> {
    return this.mutex.lock(() => this.execRaw(sql));
  }

  /** Runs fn in BEGIN IMMEDIATE … COMMIT; any throw rolls everything back. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.mutex.lock(() => this.inTransaction(() => fn(this.q)));
  }

  private async inTransaction<T>(fn: () => Promise<T>): Promise<T> {
    await this.execRaw('BEGIN IMMEDIATE');
    try {
      const result = await fn();
      await this.execRaw('COMMIT');
      return result;
    } catch (err) {
      await this.execRaw('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  private apply(version: number, statements: Statement[]): Promise<void> {
    return this.mutex.lock(() => this.inTransaction(async () => {
      for (const s of statements) await this.q.run(s.sql, s.bindings);
      await this.execRaw(`PRAGMA user_version = ${version}`);
    }));
  }

  /** A database made by Propagator 0.2 or older (versions 1 to 6) climbs its old steps to the baseline. */
  private async climbLegacySteps(): Promise<void> {
    const current = await this.schemaVersion();
    if (current === 0 || current >= BASELINE_VERSION) return;
    for (const migration of SQLITE_LEGACY_MIGRATIONS.filter((m) => m.version > current)) {
      await this.mutex.lock(() => this.inTransaction(async () => {
        await this.execRaw(migration.sql);
        await this.execRaw(`PRAGMA user_version = ${migration.version}`);
      })).catch((err: unknown) => {
        throw new Error(`database migration ${migration.version} (${migration.name}) failed: ${(err as Error).message}`, { cause: err });
      });
    }
  }

  async schemaVersion(): Promise<number> {
    return (await this.get<{ user_version: number }>('PRAGMA user_version'))?.user_version ?? 0;
  }

  close(): Promise<void> {
    return this.mutex.lock(() => new Promise((resolve, reject) => this.db.close((err) => (err ? reject(err) : resolve()))));
  }
}
