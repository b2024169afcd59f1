import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import type { MasterConfig } from '../server/config.js';
import { startAgentProcess, type AgentProcess } from './helpers/agent-process.js';
import { BASIC, createTestMaster, listenMaster, loginAgent, openMaster } from './helpers/master.js';
import { waitFor } from './helpers/master-process.js';
import { makeRelease } from './helpers/releases.js';
import { flipPayloadByte } from './helpers/tamper.js';
import { freePort, tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

const TOKEN = 'operations-enrollment-token-012345';
let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
const agents: AgentProcess[] = [];
const closers: (() => Promise<void>)[] = [];
let n = 0;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
});
after(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  for (const close of closers.reverse()) await close().catch(() => undefined);
  await cleanup();
});

interface Domain {
  m: Awaited<ReturnType<typeof createTestMaster>>;
  url: string;
  api: () => supertest.Agent;
}

async function domain(overrides: Partial<MasterConfig> = {}, productVersion = '6.2.0'): Promise<Domain> {
  const m = await createTestMaster(pki.root, { enrollToken: TOKEN, productVersion, autoAccept: true, ...overrides });
  await m.services.settings.init({ product: null, productVersion, enrollToken: TOKEN });
  const served = await listenMaster(m);
  closers.push(async () => { await served.close(); await m.cleanup(); });
  return { m, url: served.url, api: () => supertest.agent(m.app).set('Authorization', BASIC) };
}

async function agent(d: { url: string }, name: string, mode: 'mailbox' | 'bidirectional', extra: string[] = [], token = true) {
  const data = path.join(work, `op-agent-${name}`);
  const a = await startAgentProcess(['--master', d.url, '--name', name, '--mode', mode, '--data', data, '--trust', pki.root, '--initial-version', '6.1.0',
    '--poll-min', '0.2', '--poll-max', '1', '--heartbeat', '1', ...(mode === 'bidirectional' ? ['--host', '127.0.0.1', '--port', '0'] : []), ...extra],
  token ? { PROPAGATOR_ENROLL_TOKEN: TOKEN } : {});
  agents.push(a);
  return { agent: a, data };
}

async function upload(d: Domain, version: string, options: Parameters<typeof makeRelease>[3] = {}): Promise<number> {
  const file = await makeRelease(work, pki.good.rsa, version, options);
  return (await d.api().post('/api/packages').field('name', `op ${++n} ${version}`).attach('package', file).expect(201)).body.id as number;
}

interface OpJson {
  id: number;
  state: string;
  counts: Record<string, number>;
  targets: { server: string; state: string; message: string; versionBefore: string | null; versionAfter: string | null; lastCall: string | null; mode: string }[];
}

async function operate(d: Domain, body: Record<string, unknown>): Promise<number> {
  const res = await d.api().post('/api/operations').send(body).expect(202);
  assert.equal(res.headers.location, `/api/operations/${res.body.id}`);
  return res.body.id as number;
}

async function waitOperation(d: Domain, id: number, states = ['succeeded', 'failed', 'cancelled'], timeoutMs = 40_000): Promise<OpJson> {
  await waitFor(async () => states.includes(((await d.api().get(`/api/operations/${id}`)).body as OpJson).state), timeoutMs, `operation ${id}`);
  return (await d.api().get(`/api/operations/${id}`).expect(200)).body as OpJson;
}

describe('validation of POST /api/operations', () => {
  it('explains every bad request with 422, and requires the admin', async () => {
    const d = await domain();
    const none = await d.api().post('/api/operations').send({ action: 'apply', package: 1, servers: 'all' }).expect(422);
    assert.deepEqual(none.body, { error: 'There is no valid update with id 1' });
    const pkg = await upload(d, '6.2.0');
    assert.deepEqual((await d.api().post('/api/operations').send({ action: 'apply', package: pkg, servers: 'all' }).expect(422)).body,
      { error: 'There is no slave server in the domain yet: enroll an agent first' });
    const { agent: a } = await agent(d, 'val-1', 'mailbox');
    const cases: [Record<string, unknown>, string][] = [
      [{ action: 'install', package: pkg, servers: 'all' }, 'The action must be "propagate" or "apply"'],
      [{ action: 'apply', package: 'latest', servers: 'all' }, 'Give the id of a valid update in "package"'],
      [{ action: 'apply', package: pkg, servers: [] }, 'Choose at least one server'],
      [{ action: 'apply', package: pkg, servers: [a.serverId, 999, 1000] }, 'Unknown server ids: 999, 1000'],
      [{ action: 'apply', package: pkg, servers: 'some' }, 'Give "servers": a list of server ids, or "all"'],
      [{ action: 'apply', package: pkg, servers: 'all', allowDowngrade: 'yes' }, '"allowDowngrade" must be true or false'],
      [{ action: 'apply', package: await upload(d, '6.3.0'), servers: 'all' }, 'Update the master to 6.3.0 first (it runs 6.2.0)'],
      [{ action: 'apply', package: await upload(d, '1.0', { product: 'printgate' }), servers: 'all' }, 'This package is for printgate; the master runs watchdoc'],
    ];
    for (const [body, error] of cases) assert.deepEqual((await d.api().post('/api/operations').send(body).expect(422)).body, { error }, JSON.stringify(body));
    await supertest(d.m.app).post('/api/operations').send({ action: 'apply', package: pkg, servers: 'all' }).expect(401);
    assert.equal((await d.m.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM operations'))?.n, 0, 'no operation row for a refused request');
  });
});

describe('propagate then apply to the whole domain', () => {
  it('brings every server to the master version, as the agents report it', async () => {
    const d = await domain();
    const slaves = [await agent(d, 'all-mail-1', 'mailbox'), await agent(d, 'all-mail-2', 'mailbox'), await agent(d, 'all-bidi-1', 'bidirectional')];
    const before = await (await loginAgent(d.m.app)).agent.get('/servers').expect(200);
    assert.match(before.text, /✖ 3 of 3 slave servers do not run watchdoc 6\.2\.0/);
    const pkg = await upload(d, '6.2.0');
    const propagated = await waitOperation(d, await operate(d, { action: 'propagate', package: pkg, servers: 'all' }));
    assert.equal(propagated.state, 'succeeded', JSON.stringify(propagated.targets));
    assert.deepEqual(propagated.counts, { total: 3, pending: 0, running: 0, succeeded: 3, failed: 0, timedout: 0, cancelled: 0 });
    assert.ok(propagated.targets.every((t) => t.message === 'staged watchdoc 6.2.0' && t.versionAfter === '6.1.0'));
    const applied = await waitOperation(d, await operate(d, { action: 'apply', package: pkg, servers: 'all' }));
    assert.equal(applied.state, 'succeeded', JSON.stringify(applied.targets));
    assert.deepEqual(applied.targets.map((t) => [t.server, t.state, t.versionBefore, t.versionAfter]).sort(),
      [['all-bidi-1', 'succeeded', '6.1.0', '6.2.0'], ['all-mail-1', 'succeeded', '6.1.0', '6.2.0'], ['all-mail-2', 'succeeded', '6.1.0', '6.2.0']]);
    for (const s of slaves) assert.equal(await readFile(path.join(s.data, 'current', 'watchdoc.conf'), 'utf8'), 'version=6.2.0\n');
    await waitFor(async () => ((await d.api().get('/api/servers')).body as { version: string }[]).every((s) => s.version === '6.2.0'), 10_000, 'reported versions');
    const page = await (await loginAgent(d.m.app)).agent.get('/servers').expect(200);
    assert.match(page.text, /class="banner ok" id="parity">✔ All 4 servers run watchdoc 6\.2\.0, the master's version\./);
    const list = await d.api().get('/api/operations?state=succeeded').expect(200);
    assert.deepEqual(list.body.map((o: { id: number }) => o.id), [applied.id, propagated.id]);
    assert.equal(list.headers['x-total-count'], '2');
  });
});

describe('slaves that are away', () => {
  it('keeps a mailbox target pending while its slave is down, and completes it when it calls again', async () => {
    const d = await domain();
    const up = await agent(d, 'away-up', 'mailbox');
    const down = await agent(d, 'away-down', 'mailbox');
    await down.agent.stop();
    const pkg = await upload(d, '6.2.0');
    const id = await operate(d, { action: 'apply', package: pkg, servers: [up.agent.serverId, down.agent.serverId] });
    await waitFor(async () => ((await d.api().get(`/api/operations/${id}`)).body as OpJson).counts.succeeded === 1, 30_000, 'the reachable slave');
    const midway = (await d.api().get(`/api/operations/${id}`)).body as OpJson;
    const waiting = midway.targets.find((t) => t.server === 'away-down');
    assert.equal(midway.state, 'running');
    assert.deepEqual([waiting?.state, waiting?.message], ['pending', 'waiting for the slave to call in']);
    assert.ok(waiting?.lastCall, 'when the slave last called is shown');
    await agent(d, 'away-down', 'mailbox', [], false);
    const done = await waitOperation(d, id);
    assert.equal(done.state, 'succeeded');
  });

  it('times out an unreachable bidirectional target, then retries only what failed', async () => {
    const d = await domain({ bidirectionalDeadlineMs: 3000 });
    const port = await freePort();
    const fixed = ['--host', '127.0.0.1', '--port', String(port)];
    const gone = await agent(d, 'timeout-bidi', 'bidirectional', fixed);
    await agent(d, 'timeout-mail', 'mailbox');
    await gone.agent.stop();
    const pkg = await upload(d, '6.2.0');
    const first = await waitOperation(d, await operate(d, { action: 'apply', package: pkg, servers: 'all' }));
    assert.equal(first.state, 'failed');
    const timedOut = first.targets.find((t) => t.server === 'timeout-bidi');
    assert.equal(timedOut?.state, 'timedout');
    assert.match(timedOut?.message ?? '', /^the slave could not be reached before the deadline \(cannot reach the agent at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
    assert.equal(first.targets.find((t) => t.server === 'timeout-mail')?.state, 'succeeded');
    await agent(d, 'timeout-bidi', 'bidirectional', fixed, false);
    const retry = await d.api().post(`/api/operations/${first.id}/retry`).expect(202);
    const second = await waitOperation(d, retry.body.id);
    assert.deepEqual([second.state, second.targets.map((t) => t.server)], ['succeeded', ['timeout-bidi']]);
    assert.equal(((await d.api().get(`/api/operations/${retry.body.id}`)).body as { retryOf: number }).retryOf, first.id);
  });

  it('cancels the targets that have not started', async () => {
    const d = await domain();
    const away = await agent(d, 'cancel-away', 'mailbox');
    await away.agent.stop();
    const id = await operate(d, { action: 'propagate', package: await upload(d, '6.2.0'), servers: 'all' });
    const cancelled = await d.api().post(`/api/operations/${id}/cancel`).expect(200);
    assert.equal(cancelled.body.targets[0].state, 'cancelled');
    assert.equal(cancelled.body.targets[0].message, 'cancelled by admin');
    const done = await waitOperation(d, id, ['cancelled']);
    assert.deepEqual(done.counts, { total: 1, pending: 0, running: 0, succeeded: 0, failed: 0, timedout: 0, cancelled: 1 });
  });
});

describe('refusals reach the report', () => {
  it('shows why agents refused a tampered package, and a downgrade unless allowed', async () => {
    const d = await domain();
    await agent(d, 'refuse-1', 'mailbox');
    await agent(d, 'refuse-2', 'bidirectional');
    const pkg = await upload(d, '6.2.0');
    const stored = await d.m.services.packages.get(pkg);
    await flipPayloadByte(d.m.store.pathFor(stored.sha256));
    const tampered = await waitOperation(d, await operate(d, { action: 'apply', package: pkg, servers: 'all' }));
    assert.equal(tampered.state, 'failed');
    assert.deepEqual(tampered.targets.map((t) => [t.state, t.message]),
      [['failed', 'This update package is corrupt: payload checksum does not match the manifest'], ['failed', 'This update package is corrupt: payload checksum does not match the manifest']]);

    const good = await upload(d, '6.1.5');
    assert.equal((await waitOperation(d, await operate(d, { action: 'apply', package: good, servers: 'all' }))).state, 'succeeded');
    const older = await upload(d, '6.0.0');
    const refused = await waitOperation(d, await operate(d, { action: 'apply', package: older, servers: 'all' }));
    assert.equal(refused.state, 'failed');
    assert.ok(refused.targets.every((t) => t.message === 'this package (6.0.0) is older than the installed version (6.1.5); only an explicit rollback may downgrade'));
    const rollback = await waitOperation(d, await operate(d, { action: 'apply', package: older, servers: 'all', allowDowngrade: true }));
    assert.deepEqual([rollback.state, rollback.targets.map((t) => t.versionAfter)], ['succeeded', ['6.0.0', '6.0.0']]);
  });
});

describe('the engine', () => {
  it('caps parallel transfers to bidirectional slaves', async () => {
    const d = await domain({ parallelTransfers: 1 });
    await agent(d, 'cap-1', 'bidirectional');
    await agent(d, 'cap-2', 'bidirectional');
    const pkg = await upload(d, '6.2.0', { apply: 'sleep 1' });
    const op = await waitOperation(d, await operate(d, { action: 'apply', package: pkg, servers: 'all' }));
    assert.equal(op.state, 'succeeded');
    const report = await d.m.services.operations.report(op.id);
    const history = await d.m.services.operations.history(report);
    const [a, b] = report.targets;
    const releasedB = history.find((e) => e.commandId === b?.id && e.state === 'queued')?.at ?? '';
    const finishedA = history.find((e) => e.commandId === a?.id && e.state === 'succeeded')?.at ?? '';
    const releasedA = history.find((e) => e.commandId === a?.id && e.state === 'queued')?.at ?? '';
    const finishedB = history.find((e) => e.commandId === b?.id && e.state === 'succeeded')?.at ?? '';
    assert.ok(releasedB >= finishedA || releasedA >= finishedB, `one at a time: A ${releasedA}→${finishedA}, B ${releasedB}→${finishedB}`);
    assert.ok(history.filter((e) => e.state === 'held').length === 2, 'both waited for a slot');
  });

  it('finishes an operation after a master restart, executing nothing twice', async () => {
    const { dir, cleanup: done } = await tempDir('propagator-restart-op-');
    closers.push(done);
    const port = await freePort();
    const data = path.join(dir, 'data');
    const first = await openMaster(data, pki.root, { enrollToken: TOKEN, productVersion: '6.2.0', autoAccept: true });
    await first.services.settings.init({ product: null, productVersion: '6.2.0', enrollToken: TOKEN });
    let served = await listenMaster(first, port);
    const d1: Domain = { m: { ...first, cleanup: async () => undefined }, url: served.url, api: () => supertest.agent(first.app).set('Authorization', BASIC) };
    const slave = await agent(d1, 'restart-1', 'mailbox');
    await slave.agent.stop();
    const id = await operate(d1, { action: 'apply', package: await upload(d1, '6.2.0'), servers: 'all' });
    await served.close();
    await first.stop();

    const second = await openMaster(data, pki.root, { enrollToken: TOKEN, productVersion: '6.2.0', autoAccept: true });
    served = await listenMaster(second, port);
    closers.push(async () => { await served.close(); await second.stop(); });
    const d2: Domain = { m: { ...second, cleanup: async () => undefined }, url: served.url, api: () => supertest.agent(second.app).set('Authorization', BASIC) };
    await agent(d2, 'restart-1', 'mailbox', [], false);
    const finished = await waitOperation(d2, id);
    assert.equal(finished.state, 'succeeded');
    const hooks = await readFile(path.join(slave.data, 'hook-log.txt'), 'utf8');
    assert.equal(hooks.split('\n').filter((l) => l.includes('hooks/apply')).length, 1);
  });
});

describe('console', () => {
  it('offers only valid packages, runs an operation from the form, and serves the report as a page, CSV and JSON', async () => {
    const d = await domain();
    const { agent: browser, csrf } = await loginAgent(d.m.app);
    const empty = await browser.get('/propagate').expect(200);
    assert.match(empty.text, /There is no valid update to propagate: only valid packages for watchdoc up to the master's version \(6\.2\.0\) are offered\. <a href="\/updates\/new">Add an update<\/a> first\./);
    await agent(d, 'console-1', 'mailbox');
    const pkg = await upload(d, '6.2.0');
    await upload(d, '6.9.0');
    const form = await browser.get('/apply').expect(200);
    assert.match(form.text, new RegExp(`<option value="${pkg}" >op \\d+ 6\\.2\\.0 — watchdoc 6\\.2\\.0</option>`));
    assert.doesNotMatch(form.text, /6\.9\.0/, 'a package newer than the master is not offered');
    const missing = await browser.post('/operations').type('form').send({ _csrf: csrf, action: 'apply', package: String(pkg) }).expect(422);
    assert.match(missing.text, /Choose at least one server/);
    const created = await browser.post('/operations').type('form').send({ _csrf: csrf, action: 'apply', package: String(pkg), all: 'on' }).expect(303);
    const opId = Number(/\/operations\/(\d+)$/.exec(String(created.headers.location))?.[1]);
    await waitOperation(d, opId);
    const report = await browser.get(`/operations/${opId}`).expect(200);
    assert.match(report.text, /<tr data-server="console-1">[\s\S]*?<span class="badge ok">succeeded<\/span>[\s\S]*?installed watchdoc 6\.2\.0/);
    const csv = await browser.get(`/operations/${opId}/report.csv`).expect(200);
    assert.match(String(csv.headers['content-disposition']), /attachment; filename="?operation-\d+\.csv"?/);
    assert.match(csv.text, /^server,mode,state,message,version_before,version_after,started_at,finished_at,duration_seconds\r\nconsole-1,mailbox,succeeded,installed watchdoc 6\.2\.0,6\.1\.0,6\.2\.0,\S+,\S+,\d+\r\n$/);
    const json = await browser.get(`/api/operations/${opId}?download=1`).expect(200);
    assert.match(String(json.headers['content-disposition']), /attachment; filename="?operation-\d+\.json"?/);
    const list = await browser.get('/operations?state=succeeded').expect(200);
    assert.match(list.text, new RegExp(`<tr data-operation-id="${opId}">`));
    assert.doesNotMatch((await browser.get('/operations?state=failed').expect(200)).text, new RegExp(`<tr data-operation-id="${opId}">`));
    await browser.post('/operations').type('form').send({ action: 'apply', package: String(pkg), all: 'on' }).expect(403);
  });
});
