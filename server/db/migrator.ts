import knexFactory from 'knex';
import type { Knex } from 'knex';
import { ConfigurationError } from '../../lib/errors.js';
import type { DatabaseEngine, SqlValue } from './database.js';
import { BASELINE, MIGRATIONS, type Migration } from './schema.js';

export interface Statement {
  sql: string;
  bindings: SqlValue[];
}

/** What an engine gives the migrator. */
export interface MigrationDriver {
  readonly engine: DatabaseEngine;
  /** The last version applied; 0 for an empty database. */
  version(): Promise<number>;
  /** Runs the statements and records the version, in one transaction. */
  apply(version: number, name: string, statements: Statement[]): Promise<void>;
}

/**
 * knex without a connection: it only turns schema builders into each engine's SQL (`?`
 * placeholders, as every statement here), which the engine's driver then runs.
 */
function compiler(engine: DatabaseEngine): Knex {
  return knexFactory({ client: engine === 'sqlite' ? 'sqlite3' : 'pg', useNullAsDefault: true });
}

export function compile(migration: Migration, engine: DatabaseEngine): Statement[] {
  const knex = compiler(engine);
  return migration.up(knex).flatMap((builder) => {
    const compiled = builder.toSQL();
    return (Array.isArray(compiled) ? compiled : [compiled]).map((s: { sql: string; bindings?: readonly unknown[] }) => ({
      sql: s.sql,
      bindings: (s.bindings ?? []) as SqlValue[],
    }));
  });
}

/** The steps from `current` to the newest schema: the baseline for an empty database, then each newer migration. */
export function pendingMigrations(current: number): Migration[] {
  const steps = current === 0 ? [BASELINE] : [];
  return [...steps, ...MIGRATIONS.filter((m) => m.version > Math.max(current, BASELINE.version))];
}

export const NEWEST_VERSION = Math.max(BASELINE.version, ...MIGRATIONS.map((m) => m.version));

/**
 * Brings the schema to the newest version. The caller holds whatever keeps other masters out
 * meanwhile (the data-folder lock for SQLite, an advisory lock on PostgreSQL).
 */
export async function migrate(driver: MigrationDriver): Promise<number> {
  const current = await driver.version();
  if (current > NEWEST_VERSION) {
    throw new ConfigurationError(`the database has schema version ${current}, newer than this Propagator knows (${NEWEST_VERSION}): start the newer Propagator that wrote it`);
  }
  if (current > 0 && current < BASELINE.version) {
    throw new ConfigurationError(`the database has schema version ${current}, older than the baseline ${BASELINE.version}; only SQLite databases made by Propagator 0.2 may be that old`);
  }
  let applied = 0;
  for (const migration of pendingMigrations(current)) {
    try {
      await driver.apply(migration.version, migration.name, compile(migration, driver.engine));
    } catch (err) {
      throw new Error(`database migration ${migration.version} (${migration.name}) failed: ${(err as Error).message}`, { cause: err });
    }
    applied++;
  }
  return applied;
}
