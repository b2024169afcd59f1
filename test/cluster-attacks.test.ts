import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { newNonce } from '../lib/agent-keys.js';
import { ADMIN_PASSWORD, BASIC } from './helpers/master.js';
import { startMasterProcess, waitFor, type MasterProcess } from './helpers/master-process.js';
import { startPartitionProxy, type PartitionProxy } from './helpers/partition-proxy.js';
import { postgresUnavailable, startPostgres, type PostgresServer } from './helpers/postgres.js';
import { tempDir } from './helpers/run.js';
import { SimulatedAgent } from './helpers/simulated-agent.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

const TOKEN = 'cluster-attacks-token-0123456789';
const unavailable = await postgresUnavailable();

/**
 * What an attacker who records agent traffic, or an administrator's act at one master, does
 * across masters: two real master processes on one PostgreSQL database, no balancer in between,
 * so the test chooses which master hears each call.
 */
describe('two masters on one database', { skip: unavailable ?? false }, () => {
  let pg: PostgresServer;
  let pki: TestPki;
  let work: string;
  let cleanup: () => Promise<void>;
  let a: MasterProcess;
  let b: MasterProcess;
  let url: string;

  before(async () => {
    ({ dir: work, cleanup } = await tempDir('propagator-cluster-attacks-'));
    pki = await createTestPki(path.join(work, 'pki'));
    pg = await startPostgres();
    url = await pg.createDatabase('attacks');
    const env = { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD, PROPAGATOR_ENROLL_TOKEN: TOKEN, PROPAGATOR_DATABASE_URL: url };
    const store = path.join(work, 'store');
    [a, b] = await Promise.all(['a', 'b'].map((n) => startMasterProcess(['--data', path.join(work, n), '--store', store, '--trust', pki.root, '--auto-accept', '--name', `master-${n}`], env))) as [MasterProcess, MasterProcess];
  });
  after(async () => {
    await a?.stop('SIGKILL');
    await b?.stop('SIGKILL');
    await pg?.stop();
    await cleanup?.();
  });

  it('refuses at one master a call recorded at the other, and takes the session itself at both', async () => {
    const agent = await new SimulatedAgent(a.url, 'print-replayed').join(TOKEN);
    const body = JSON.stringify({ status: agent.status(), results: [] });
    const headers = { ...agent.sessionHeaders('POST', '/api/agent/report', body, newNonce()), 'content-type': 'application/json' };
    const heard = await fetch(`${a.url}/api/agent/report`, { method: 'POST', headers, body });
    assert.equal(heard.status, 200, await heard.text());
    const replayed = await fetch(`${b.url}/api/agent/report`, { method: 'POST', headers, body });
    assert.deepEqual([replayed.status, await replayed.json()], [401, { error: 'This call was already received once (a replay is refused)' }]);
    // The session opened at one master is good at the other (one master key), with fresh calls.
    const atB = new SimulatedAgent(b.url, agent.name);
    Object.assign(atB, { token: agent.token, sessionKey: agent.sessionKey, clockOffset: agent.clockOffset, fingerprint: agent.fingerprint });
    assert.equal((await atB.call('POST', '/api/agent/report', { body, session: true })).status, 200);
  });

  it('spends a session challenge once for all masters', async () => {
    const agent = await new SimulatedAgent(a.url, 'print-challenged').join(TOKEN);
    const challenge = ((await agent.call('GET', '/api/agent/challenge')).body as { challenge: string }).challenge;
    const opening = JSON.stringify({ name: agent.name, keyFingerprint: agent.fingerprint, challenge, exchangeKey: 'AAAA' });
    const atB = new SimulatedAgent(b.url, agent.name);
    Object.assign(atB, { privateKey: agent.privateKey, fingerprint: agent.fingerprint });
    const first = await atB.call('POST', '/api/agent/session', { body: opening, prove: true });
    // Spent at B, whatever else B thought of the request; then refused at A.
    assert.notEqual(first.status, 409, first.text);
    const again = await agent.call('POST', '/api/agent/session', { body: opening, prove: true });
    assert.deepEqual([again.status, again.body], [409, { error: 'The session challenge is stale, used, or was not made by this master; ask for a new one' }]);
  });

  it('refuses at once, at the other master, an agent removed at one', async () => {
    const agent = await new SimulatedAgent(b.url, 'print-removed').join(TOKEN);
    // B has the agent's identity cached after these calls.
    for (let i = 0; i < 3; i++) assert.equal((await agent.report(undefined)).status, 200);
    const removed = await fetch(`${a.url}/api/servers/${agent.serverId}`, { method: 'DELETE', headers: { authorization: BASIC } });
    assert.equal(removed.status, 204);
    await waitFor(async () => (await agent.report(undefined)).status === 401, 2000, 'B to refuse the removed agent');
    const refused = await agent.report(undefined);
    assert.deepEqual([refused.status, refused.body], [401, { error: 'The agent session is not valid (the server was removed, or its key changed); open a new one' }]);
  });

  it('frees, within a minute, the name of a package a dead master left half-stored, and only that one', { timeout: 120_000 }, async () => {
    const database = new URL(url).pathname.slice(1);
    const live = (await pg.query<{ id: string }>(database, "SELECT id FROM masters WHERE name = 'master-a'"))[0]?.id;
    assert.ok(live, 'master-a has its row');
    const minuteAgo = new Date(Date.now() - 60_000).toISOString();
    const row = (name: string, sha: string, by: string, at: string) => pg.query(database,
      `INSERT INTO packages (name, product, version, size, sha256, payload_size, payload_sha256, manifest_json, signer_subject, chain_json, signer_not_after, state, uploaded_by, uploaded_at, stored_by)
       VALUES ($1, 'watchdoc', '9.9', 1, $2, 1, $2, '{}', 'x', '[]', '2099-01-01', 'storing', 'admin', $3, $4)`, [name, sha, at, by]);
    await row('Left by a dead master', 'd'.repeat(64), 'deadbeef0000', minuteAgo);
    await row('Being stored by master-a', 'e'.repeat(64), live, minuteAgo);
    await row('Just begun by a dead master', 'f'.repeat(64), 'deadbeef0001', new Date().toISOString());
    const names = async () => (await pg.query<{ name: string }>(database, "SELECT name FROM packages WHERE state = 'storing' ORDER BY name")).map((r) => r.name);
    await waitFor(async () => !(await names()).includes('Left by a dead master'), 60_000, 'the sweep');
    assert.deepEqual(await names(), ['Being stored by master-a', 'Just begun by a dead master']);
    await pg.query(database, "DELETE FROM packages WHERE state = 'storing'");
  });

  it('says /health is down while the database is, gives up the background work, and heals when it is back', { timeout: 120_000 }, async () => {
    await waitFor(async () => [a, b].some((m) => /now runs the background work/.test(m.stdout())), 10_000, 'a leader');
    const leader = [a, b].find((m) => /now runs the background work/.test(m.stdout())) as MasterProcess;
    await pg.halt();
    try {
      for (const m of [a, b]) {
        await waitFor(async () => (await fetch(`${m.url}/health`)).status === 503, 15_000, '503 from /health');
        const health = await (await fetch(`${m.url}/health`)).json() as { status: string; database: boolean; reason: string };
        assert.equal(health.status, 'unavailable');
        assert.equal(health.database, false);
        assert.match(health.reason, /^the master cannot reach its database \((ECONNREFUSED|57P01|08006)\): the database cannot be written$|^the master cannot reach its database: the database cannot be written$/);
      }
      await waitFor(async () => /no longer runs the background work/.test(leader.stdout()), 15_000, 'the leader to step down');
      // A request meanwhile: not a 500, the reason and what to do.
      for (const m of [a, b]) {
        const listed = await fetch(`${m.url}/api/packages`, { headers: { authorization: BASIC } });
        const body = await listed.json() as { error: string };
        assert.equal(listed.status, 503, body.error);
        assert.match(body.error, /^The master cannot reach its database \((ECONNREFUSED|57P01|closed)\): nothing was saved\. Try again in a moment; if it lasts, check the database server$/);
      }
    } finally {
      await pg.resume();
    }
    for (const m of [a, b]) await waitFor(async () => (await fetch(`${m.url}/health`)).status === 200, 30_000, '200 from /health');
    const leaders = () => [a, b].filter((m) => (m.stdout().match(/now runs the background work/g) ?? []).length > (m.stdout().match(/no longer runs the background work/g) ?? []).length);
    await waitFor(async () => leaders().length === 1, 15_000, 'one leader again');
    // Both masters work again: an agent joins through one and reports through the other.
    const agent = await new SimulatedAgent(a.url, 'print-after-outage').join(TOKEN);
    assert.equal((await agent.report(undefined)).status, 200);
  });
});

/**
 * A network partition between the leader and the database (no FIN, no RST: packets simply stop):
 * the leader must stop its background work on its own, and another master take over once the
 * database has let the silent leader's lock go.
 */
describe('a leader cut off from the database', { skip: unavailable ?? false }, () => {
  let pg: PostgresServer;
  let pki: TestPki;
  let work: string;
  let cleanup: () => Promise<void>;
  const masters: MasterProcess[] = [];
  let proxy: PartitionProxy;

  before(async () => {
    ({ dir: work, cleanup } = await tempDir('propagator-partition-'));
    pki = await createTestPki(path.join(work, 'pki'));
    pg = await startPostgres();
    proxy = await startPartitionProxy(pg.port);
  });
  after(async () => {
    await Promise.all(masters.map((m) => m.stop('SIGKILL')));
    await proxy?.close();
    await pg?.stop();
    await cleanup?.();
  });

  it('steps down by itself, and the other master leads in its place', { timeout: 120_000 }, async (t) => {
    const url = await pg.createDatabase('partition');
    const viaProxy = Object.assign(new URL(url), { port: String(proxy.port) }).toString();
    const env = { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD, PROPAGATOR_ENROLL_TOKEN: TOKEN };
    const args = (n: string) => ['--data', path.join(work, n), '--store', path.join(work, 'store'), '--trust', pki.root, '--name', n];
    const cut = await startMasterProcess([...args('cut'), '--database', viaProxy], env);
    masters.push(cut);
    await waitFor(async () => /now runs the background work/.test(cut.stdout()), 10_000, 'the first master to lead');
    const other = await startMasterProcess([...args('other'), '--database', url], env);
    masters.push(other);
    const leadsAt = (m: MasterProcess, what: RegExp) => Date.parse(/"time":"([^"]+)"[^\n]*/.exec(m.stdout().split('\n').find((l) => what.test(l)) ?? '')?.[1] ?? '');

    const frozenAt = Date.now();
    proxy.freeze();
    await waitFor(async () => /no longer runs the background work/.test(cut.stdout()), 20_000, 'the cut-off leader to step down');
    await waitFor(async () => /now runs the background work/.test(other.stdout()), 30_000, 'the other master to lead');
    const steppedDown = leadsAt(cut, /no longer runs the background work/);
    const tookOver = leadsAt(other, /now runs the background work/);
    t.diagnostic(`stepped down ${steppedDown - frozenAt} ms after the cut; the other led ${tookOver - frozenAt} ms after it`);
    assert.ok(steppedDown <= tookOver, 'never two leaders at once');

    // The partition heals: the old leader comes back as a follower, one leader still.
    proxy.thaw();
    await waitFor(async () => (await fetch(`${cut.url}/health`)).status === 200, 30_000, 'the cut-off master to be healthy again');
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal((cut.stdout().match(/now runs the background work/g) ?? []).length, 1, 'it did not lead again');
  });
});
