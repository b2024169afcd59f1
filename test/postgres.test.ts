import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PostgresDatabase } from '../server/db/postgres-database.js';
import { SqliteDatabase } from '../server/db/sqlite-database.js';
import { NEWEST_VERSION, pendingMigrations } from '../server/db/migrator.js';
import { ADMIN_PASSWORD, BASIC } from './helpers/master.js';
import { startMasterProcess, waitFor, type MasterProcess } from './helpers/master-process.js';
import { postgresShape, sqliteShape } from './helpers/schema-shape.js';
import { postgresUnavailable, startPostgres, type PostgresServer } from './helpers/postgres.js';
import { startAgentProcess } from './helpers/agent-process.js';
import { makeRelease } from './helpers/releases.js';
import { freePort, propagator, tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

const unavailable = await postgresUnavailable();
let server: PostgresServer;
let dir: string;
let cleanup: () => Promise<void>;
let pki: TestPki;

describe('PostgreSQL', { skip: unavailable ?? false }, () => {
  before(async () => {
    server = await startPostgres();
    ({ dir, cleanup } = await tempDir('propagator-pg-test-'));
    pki = await createTestPki(path.join(dir, 'pki'));
  });
  after(async () => {
    await server?.stop();
    await cleanup?.();
  });

  it('gets the schema SQLite gets, from the same migrations', async () => {
    const pgDb = await PostgresDatabase.open(await server.createDatabase());
    const liteDb = await SqliteDatabase.open(path.join(dir, 'same.sqlite'));
    try {
      assert.equal(await pgDb.schemaVersion(), NEWEST_VERSION);
      assert.deepEqual(await postgresShape(pgDb), await sqliteShape(liteDb));
      await assert.rejects(pgDb.run("INSERT INTO servers (name, mode, secret_hash, enrolled_at) VALUES ('x', 'pigeon', '', '')"), /violates check constraint/);
    } finally {
      await pgDb.close();
      await liteDb.close();
    }
  });

  it('is migrated once when masters start together on an empty database', async () => {
    const url = await server.createDatabase('together');
    const database = new URL(url).pathname.slice(1);
    const env = { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD, PROPAGATOR_DATABASE_URL: url };
    // Truly together: the masters' first read of the schema version waits behind this lock until
    // all three are there (on the lock, or on the migrations' advisory lock); then they race.
    const gate = new pg.Client({ connectionString: url });
    await gate.connect();
    await gate.query('CREATE TABLE propagator_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at text NOT NULL, applied_by text NOT NULL)');
    await gate.query('BEGIN');
    await gate.query('LOCK TABLE propagator_migrations IN ACCESS EXCLUSIVE MODE');
    const starting = [1, 2, 3].map((n) => startMasterProcess(['--data', path.join(dir, `together-${n}`), '--trust', pki.root, '--name', `master-${n}`], env));
    for (const s of starting) s.catch(() => undefined);
    await waitFor(async () => (await server.query<{ n: number }>(database, "SELECT COUNT(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", [database]))[0]?.n === 3, 20_000, 'three masters at the gate');
    await gate.query('COMMIT');
    await gate.end();
    const settled = await Promise.allSettled(starting);
    const masters: MasterProcess[] = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    try {
      assert.deepEqual(settled.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : [])), [], 'every master started');
      const applied = await server.query<{ version: number; applied_by: string }>(database, 'SELECT version, applied_by FROM propagator_migrations ORDER BY version');
      assert.deepEqual(applied.map((a) => a.version), pendingMigrations(0).map((m) => m.version), 'each version applied once');
      assert.equal(new Set(applied.map((a) => a.applied_by)).size, 1, 'all by one master');
      assert.ok(masters.some((m) => applied[0]?.applied_by.endsWith(`pid ${m.child.pid}`)), `applied by one of the masters: ${applied[0]?.applied_by}`);
      for (const m of masters) {
        const health = await fetch(`${m.url}/health`);
        assert.equal(health.status, 200, await health.text());
        const packages = await fetch(`${m.url}/api/packages`, { headers: { authorization: BASIC } });
        assert.equal(packages.status, 200);
      }
      // What every master logs at start names the database without its password.
      for (const m of masters) assert.doesNotMatch(m.stderr(), /master exited/);
    } finally {
      await Promise.all(masters.map((m) => m.stop()));
    }
  });

  it('refuses a master whose package store is not the one of the database\'s packages, and loses nothing', async () => {
    const url = await server.createDatabase('stores');
    const env = { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD, PROPAGATOR_DATABASE_URL: url };
    const shared = path.join(dir, 'shared-store');
    const first = await startMasterProcess(['--data', path.join(dir, 'stores-1'), '--store', shared, '--trust', pki.root], env);
    try {
      const form = new FormData();
      form.set('name', 'Kept');
      form.set('package', new Blob([await readFile(await makeRelease(dir, pki.good.rsa, '6.3.0'))]), 'kept.pkg');
      assert.equal((await fetch(`${first.url}/api/packages`, { method: 'POST', headers: { authorization: BASIC }, body: form })).status, 201);
      // The usual mistake: a second master without --store, on its own DATA/packages.
      const second = path.join(dir, 'stores-2');
      await assert.rejects(startMasterProcess(['--data', second, '--trust', pki.root], env), (err: Error) => {
        const id = /the database's store is (\S+)\)/.exec(err.message)?.[1];
        assert.equal(err.message.trim(), `master exited with 2: propagator: the package store (the folder ${path.join(second, 'packages')}) is not the one this database's packages are in (it has no store mark, the database's store is ${id}): give every master the same --store`);
        return true;
      });
      const listed = await (await fetch(`${first.url}/api/packages`, { headers: { authorization: BASIC } })).json() as { name: string; state: string }[];
      assert.deepEqual(listed.map((p) => [p.name, p.state]), [['Kept', 'valid']]);
      // With the same --store it joins.
      const joined = await startMasterProcess(['--data', second, '--store', shared, '--trust', pki.root], env);
      await joined.stop();
    } finally {
      await first.stop();
    }
  });

  it('takes a SQLite master\'s data (propagator database copy), and its agents carry on with the new master', { timeout: 180_000 }, async () => {
    const port = await freePort();
    const data = path.join(dir, 'moving');
    const env = { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD, PROPAGATOR_ENROLL_TOKEN: 'moving-enrollment-token-0123456789' };
    const common = ['--port', String(port), '--trust', pki.root, '--auto-accept', '--product', 'watchdoc', '--product-version', '9.0.0'];
    const old = await startMasterProcess([...common, '--data', data], env);
    const agentData = path.join(dir, 'moving-agent');
    const agent = await startAgentProcess(['--master', old.url, '--name', 'print-moving', '--mode', 'mailbox', '--data', agentData, '--trust', pki.root,
      '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1', '--heartbeat', '1'], env);
    try {
      const api = async <T>(base: string, method: string, route: string, body?: unknown) => {
        const res = await fetch(`${base}${route}`, { method, headers: { authorization: BASIC, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
        return { status: res.status, body: await res.json() as T };
      };
      const form = new FormData();
      form.set('name', 'Moving 6.4.0');
      form.set('package', new Blob([await readFile(await makeRelease(dir, pki.good.rsa, '6.4.0'))]), 'moving.pkg');
      const pkg = await (await fetch(`${old.url}/api/packages`, { method: 'POST', headers: { authorization: BASIC }, body: form })).json() as { id: number };
      const staged = await api<{ id: number }>(old.url, 'POST', '/api/operations', { action: 'propagate', package: pkg.id, servers: [agent.serverId] });
      await waitFor(async () => (await api<{ state: string }>(old.url, 'GET', `/api/operations/${staged.body.id}`)).body.state === 'succeeded', 30_000, 'the propagate');

      const url = await server.createDatabase('moved');
      // Not while the master runs on the folder.
      const busy = await propagator(['database', 'copy', '--data', data, '--to', url]);
      assert.deepEqual([busy.code, busy.stderr.trim()], [2, `propagator: another master (pid ${old.child.pid}) uses ${data}`]);
      await old.stop();
      const store = path.join(dir, 'moved-store');
      const copied = await propagator(['database', 'copy', '--data', data, '--to', url, '--store', store]);
      assert.equal(copied.code, 0, copied.stderr);
      assert.match(copied.stderr, /Copied into postgres:\/\/postgres@127\.0\.0\.1:\d+\/moved_\w+: settings \d+, packages 1, servers 1, sessions \d+, operations 1, commands 1, command_events \d+, server_requests 0, enroll_tokens 0, and the master key\.\nCopied 1 package file\(s\) into /);
      const again = await propagator(['database', 'copy', '--data', data, '--to', url]);
      assert.equal(again.code, 2);
      assert.match(again.stderr.trim(), /^propagator: the PostgreSQL database is not empty \(settings has \d+ rows\): copy into a new database, which no master has used$/);

      // The new master, on PostgreSQL, where the old one was: the agent never enrolls again.
      const moved = await startMasterProcess([...common, '--data', path.join(dir, 'moved-data'), '--database', url, '--store', store], env);
      try {
        const history = await api<{ state: string; targets: { state: string }[] }>(moved.url, 'GET', `/api/operations/${staged.body.id}`);
        assert.deepEqual([history.body.state, history.body.targets.map((t) => t.state)], ['succeeded', ['succeeded']]);
        const applied = await api<{ id: number }>(moved.url, 'POST', '/api/operations', { action: 'apply', package: pkg.id, servers: [agent.serverId] });
        assert.equal(applied.body.id, staged.body.id + 1, 'operation numbers go on');
        await waitFor(async () => (await api<{ state: string }>(moved.url, 'GET', `/api/operations/${applied.body.id}`)).body.state !== 'running', 60_000, 'the apply');
        const report = await api<{ state: string; targets: { state: string; versionAfter: string }[] }>(moved.url, 'GET', `/api/operations/${applied.body.id}`);
        assert.deepEqual([report.body.state, report.body.targets.map((t) => [t.state, t.versionAfter])], ['succeeded', [['succeeded', '6.4.0']]]);
        assert.doesNotMatch(agent.logs(), /waiting for the administrator|enroll it again/);
      } finally {
        await moved.stop();
      }
    } finally {
      await agent.stop('SIGKILL');
      await old.stop('SIGKILL');
    }
  });

  it('refuses to start on a database it cannot reach, and says which', async () => {
    const url = `postgres://propagator:s3cret-password@127.0.0.1:${server.port + 1}/nowhere`;
    await assert.rejects(
      startMasterProcess(['--data', path.join(dir, 'unreachable'), '--trust', pki.root], { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD, PROPAGATOR_DATABASE_URL: url }),
      (err: Error) => {
        assert.match(err.message, new RegExp(`master exited with 2: propagator: cannot use the database postgres://propagator@127\\.0\\.0\\.1:${server.port + 1}/nowhere: connect ECONNREFUSED`));
        assert.doesNotMatch(err.message, /s3cret-password/);
        return true;
      });
  });
});
