import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sqlite3 from 'sqlite3';
import { parseDatabaseLocation } from '../server/db/location.js';
import { NEWEST_VERSION } from '../server/db/migrator.js';
import { SqliteDatabase } from '../server/db/sqlite-database.js';
import { SQLITE_LEGACY_MIGRATIONS } from '../server/db/sqlite-legacy-migrations.js';
import { sqliteShape } from './helpers/schema-shape.js';
import { tempDir } from './helpers/run.js';

let dir: string;
let cleanup: () => Promise<void>;
before(async () => ({ dir, cleanup } = await tempDir('propagator-db-')));
after(() => cleanup());

/** A SQLite file as Propagator 0.2 left it at `version`, written by sqlite3 itself. */
async function legacyFile(name: string, version: number, then = ''): Promise<string> {
  const file = path.join(dir, name);
  const steps = SQLITE_LEGACY_MIGRATIONS.filter((m) => m.version <= version).map((m) => m.sql).join('\n');
  const db = new sqlite3.Database(file);
  await new Promise<void>((resolve, reject) => db.exec(`${steps}\nPRAGMA user_version = ${version};\n${then}`, (err) => (err ? reject(err) : resolve())));
  await new Promise<void>((resolve) => db.close(() => resolve()));
  return file;
}

describe('the schema', () => {
  it('is the same for a new database (knex baseline) and one that climbed the legacy SQLite steps', async () => {
    const fresh = await SqliteDatabase.open(path.join(dir, 'fresh.sqlite'));
    const climbed = await SqliteDatabase.open(await legacyFile('v4.sqlite', 4));
    try {
      assert.equal(await fresh.schemaVersion(), NEWEST_VERSION);
      assert.equal(await climbed.schemaVersion(), NEWEST_VERSION);
      const a = await sqliteShape(fresh);
      const b = await sqliteShape(climbed);
      assert.deepEqual(Object.keys(a), ['command_events', 'commands', 'enroll_tokens', 'health_check', 'masters', 'operations', 'packages', 'server_requests', 'servers', 'sessions', 'settings', 'spent_tokens']);
      assert.deepEqual(a, b);
      // The checks are there, not only equal: a state outside the list is refused on both.
      for (const db of [fresh, climbed]) {
        await assert.rejects(db.run("UPDATE health_check SET id = 2"), /CHECK constraint failed/);
        await assert.rejects(db.run("INSERT INTO servers (name, mode, secret_hash, enrolled_at) VALUES ('x', 'pigeon', '', '')"), /CHECK constraint failed/);
      }
    } finally {
      await fresh.close();
      await climbed.close();
    }
  });

  it('keeps the rows of a database that climbs from version 4', async () => {
    const file = await legacyFile('v4-rows.sqlite', 4, `
      INSERT INTO servers (name, mode, secret_hash, enrolled_at) VALUES ('print-old', 'mailbox', 'hash', '2026-01-01T00:00:00.000Z');
      INSERT INTO settings (key, value) VALUES ('product_version', '6.1.0');`);
    const db = await SqliteDatabase.open(file);
    try {
      assert.deepEqual(await db.all('SELECT name, mode, secret_hash, clock_offset_ms FROM servers'), [{ name: 'print-old', mode: 'mailbox', secret_hash: '', clock_offset_ms: null }]);
      assert.deepEqual(await db.all('SELECT value FROM settings'), [{ value: '6.1.0' }]);
      assert.deepEqual(await db.all('SELECT id, checked_at FROM health_check'), [{ id: 1, checked_at: '' }]);
    } finally {
      await db.close();
    }
  });

  it('refuses a database written by a newer Propagator, and leaves it as it was', async () => {
    const file = await legacyFile('future.sqlite', 7, 'PRAGMA user_version = 99;');
    await assert.rejects(SqliteDatabase.open(file), {
      message: `the database has schema version 99, newer than this Propagator knows (${NEWEST_VERSION}): start the newer Propagator that wrote it`,
    });
    const db = new sqlite3.Database(file);
    const version = await new Promise<number>((resolve) => db.get('PRAGMA user_version', (_e, row: { user_version: number }) => resolve(row.user_version)));
    await new Promise<void>((resolve) => db.close(() => resolve()));
    assert.equal(version, 99);
  });
});

describe('--database', () => {
  const data = '/srv/propagator/data';
  it('is the SQLite file in the data folder by default, a path, sqlite:PATH, or a postgres:// URL', () => {
    assert.deepEqual(parseDatabaseLocation(undefined, data, '/work'), { engine: 'sqlite', file: '/srv/propagator/data/propagator.sqlite' });
    assert.deepEqual(parseDatabaseLocation('db/p.sqlite', data, '/work'), { engine: 'sqlite', file: '/work/db/p.sqlite' });
    assert.deepEqual(parseDatabaseLocation('sqlite:/var/p.sqlite', data, '/work'), { engine: 'sqlite', file: '/var/p.sqlite' });
    assert.deepEqual(parseDatabaseLocation('postgres://propagator@db:5432/prop', data), { engine: 'postgres', url: 'postgres://propagator@db:5432/prop' });
    assert.deepEqual(parseDatabaseLocation('postgresql://db/prop', data), { engine: 'postgres', url: 'postgresql://db/prop' });
  });

  it('says what it takes when given something else', () => {
    assert.throws(() => parseDatabaseLocation('mysql://db/prop', data), { message: '--database: a SQLite file or a postgres:// URL, not "mysql:"' });
    assert.throws(() => parseDatabaseLocation('postgres://db:99999/prop', data), { message: '--database: not a valid PostgreSQL URL (example: postgres://propagator@db.example:5432/propagator)' });
  });
});
