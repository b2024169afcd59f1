import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { CommandRunner } from '../agent/command-runner.js';
import { loadAgentKey } from '../agent/identity.js';
import { MasterClient } from '../agent/master-client.js';
import { ReleaseManager } from '../agent/release-manager.js';
import { ReportLoop, withJitter } from '../agent/report-loop.js';
import { Stager } from '../agent/stager.js';
import type { AgentStatus } from '../lib/agent-protocol.js';
import { signAnswer } from '../lib/request-signing.js';
import { macAnswer, sealSessionKey } from '../lib/session-crypto.js';
import { memoryLogger } from '../lib/logger.js';
import { BASIC, createTestMaster, listenMaster } from './helpers/master.js';
import { makeRelease } from './helpers/releases.js';
import { tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

const TOKEN = 'loop-enrollment-token-0123456789';
let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
});
after(() => cleanup());

/** A real master on loopback and the parts of a real agent, driven one call at a time. */
async function setup(name: string, overrides: { mailboxSessionsPerMinute?: number } = {}, masterUrl?: string) {
  const m = await createTestMaster(pki.root, { enrollToken: TOKEN, autoAccept: true, ...overrides });
  await m.services.settings.init({ product: null, productVersion: null, enrollToken: TOKEN });
  const served = await listenMaster(m);
  const log = memoryLogger();
  const data = path.join(work, name);
  await mkdir(data, { recursive: true });
  const key = await loadAgentKey(data);
  const client = new MasterClient(masterUrl ?? served.url, null, key, { name, masterFingerprint: null });
  const releases = new ReleaseManager(data, { name, product: 'watchdoc', initialVersion: '6.1.0', hookTimeoutMs: 10_000, keep: 3, maxUnpackRatio: 10 }, log);
  await releases.init();
  const stager = new Stager(data, { name, product: 'watchdoc', trustPath: pki.root, retryMaxDelayMs: 60_000 }, client, log);
  await stager.init();
  const status = async (): Promise<AgentStatus> => ({ name, mode: 'mailbox', address: null, product: 'watchdoc', version: await releases.installedVersion(), staged: [], freeDiskBytes: null });
  const enrolled = await new MasterClient(served.url, null, key, { name, masterFingerprint: null }).enroll(await status(), TOKEN);
  client.setMasterKey(enrolled.masterPublicKey);
  const serverId = enrolled.serverId as number;
  const runner = new CommandRunner(path.join(data, 'commands'), { stager, releases, log });
  await runner.init();
  const config = { mode: 'mailbox' as const, pollMinMs: 1000, pollMaxMs: 3000, backoffMaxMs: 20_000, heartbeatMs: 30_000 };
  const loop = new ReportLoop(config, { client, runner, status, log });
  /** A report made by hand with this agent's session, as the agent would send it. */
  const post = async (body: string | Blob, headers: Record<string, string> = { 'content-type': 'application/json' }) => fetch(`${served.url}/api/agent/report`, {
    method: 'POST', body, headers: { ...client.sessionHeaders(await client.liveSession(), 'POST', 'api/agent/report', typeof body === 'string' ? body : '').headers, ...headers },
  });
  return { m, served, loop, runner, serverId, log, data, post, close: async () => { await runner.idle(); await served.close(); await m.cleanup(); } };
}

describe('mailbox rhythm', () => {
  it('spreads calls by ±20 %', () => {
    assert.equal(withJitter(10_000, () => 0), 8000);
    assert.equal(withJitter(10_000, () => 1), 12_000);
    assert.equal(withJitter(10_000, () => 0.5), 10_000);
  });

  it('slows down while idle, and comes back at once when the master has work', async () => {
    const s = await setup('rhythm');
    try {
      const idle = [await s.loop.once(), await s.loop.once(), await s.loop.once(), await s.loop.once(), await s.loop.once()];
      assert.deepEqual(idle, [1000, 1500, 2250, 3000, 3000]);
      const pkgId = (await supertest(s.m.app).post('/api/packages').set('Authorization', BASIC).field('name', 'rhythm').attach('package', await makeRelease(work, pki.good.rsa, '6.2.0')).expect(201)).body.id as number;
      await s.m.services.commands.enqueue({ serverId: s.serverId, type: 'propagate', packageId: pkgId });
      assert.equal(await s.loop.once(), 1000, 'the master says: call again in 1 s while work is queued');
      await s.runner.idle();
      assert.equal(await s.loop.once(), 1000, 'a result to report, then back to the minimum');
      assert.deepEqual([await s.loop.once(), await s.loop.once()], [1500, 2250], 'idle again: growing from the minimum');
    } finally {
      await s.close();
    }
  });

  it('spaces its calls out while a long command runs, and reports the result at once', async () => {
    const s = await setup('busy');
    try {
      const pkgId = (await supertest(s.m.app).post('/api/packages').set('Authorization', BASIC).field('name', 'busy').attach('package', await makeRelease(work, pki.good.rsa, '6.3.0', { apply: 'sleep 2' })).expect(201)).body.id as number;
      const command = await s.m.services.commands.enqueue({ serverId: s.serverId, type: 'apply', packageId: pkgId });
      const delays = [await s.loop.once()];
      while (s.runner.busy() && delays.length < 8) delays.push(await s.loop.once());
      assert.ok(s.runner.busy(), 'the apply hook is still sleeping');
      // Work arrives and its "running" result goes out at the minimum; then the calls grow as if idle.
      assert.equal(delays[0], 1000);
      assert.deepEqual(delays.slice(delays.lastIndexOf(1000) + 1, delays.lastIndexOf(1000) + 4), [1500, 2250, 3000], String(delays));
      const woken = new Promise<void>((resolve) => {
        s.runner.onResult = resolve;
      });
      await woken;
      assert.equal(await s.loop.once(), 1000, 'the result goes out, then the next call comes soon');
      assert.equal((await s.m.services.commands.get(command.id)).state, 'succeeded');
    } finally {
      await s.close();
    }
  });

  it('backs off exponentially while the master cannot be reached', async () => {
    const s = await setup('unreachable', {}, 'http://127.0.0.1:9');
    try {
      const delays = [];
      for (let i = 0; i < 7; i++) delays.push(await s.loop.once());
      assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16_000, 20_000, 20_000]);
      assert.ok(s.log.lines.some((l) => l.includes('cannot reach the master; backing off') && l.includes('ECONNREFUSED')));
    } finally {
      await s.close();
    }
  });

  it('waits as the master asks when it caps mailbox sessions', async () => {
    const s = await setup('capped', { mailboxSessionsPerMinute: 2 });
    try {
      assert.equal(await s.loop.once(), 1000);
      assert.equal(await s.loop.once(), 1500);
      const delay = await s.loop.once();
      assert.ok(delay >= 1000 && delay <= 60_000 && delay % 1000 === 0, `waits the Retry-After delay (${delay} ms)`);
      assert.ok(s.log.lines.some((l) => l.includes('the master asked to call again later')));
      const res = await s.post(JSON.stringify({ status: { name: 'capped', mode: 'mailbox', address: null, product: 'watchdoc', version: '6.1.0', staged: [], freeDiskBytes: null }, results: [] }));
      assert.equal(res.status, 429);
      assert.match(res.headers.get('retry-after') ?? '', /^\d+$/);
      assert.match(((await res.json()) as { error: string }).error, /^The master serves at most 2 mailbox sessions a minute; call again in \d+ s$/);
    } finally {
      await s.close();
    }
  });

  it('refuses malformed reports with a clear message', async () => {
    const s = await setup('malformed');
    try {
      const res = await s.post(JSON.stringify({ status: { name: 'malformed', mode: 'carrier-pigeon' }, results: [] }));
      assert.equal(res.status, 422);
      assert.deepEqual(await res.json(), { error: 'The mode must be bidirectional or mailbox' });
      const wrongName = await s.post(JSON.stringify({ status: { name: 'someone-else', mode: 'mailbox', address: null, product: 'watchdoc', version: '6.1.0', staged: [], freeDiskBytes: null }, results: [] }));
      assert.deepEqual([wrongName.status, await wrongName.json()], [403, { error: 'This agent is enrolled as "malformed", not "someone-else"' }]);

      const post = async (body: string | Blob, headers: Record<string, string>) => {
        const res = await s.post(body, headers);
        return [res.status, await res.json()] as const;
      };
      assert.deepEqual(await post('{"status": {', { 'content-type': 'application/json' }), [400, { error: 'The request body is not valid JSON' }]);
      assert.deepEqual(await post(JSON.stringify({ status: {}, results: [], filler: 'x'.repeat(1024 * 1024) }), { 'content-type': 'application/json' }), [413, { error: 'The request body is too large' }]);
      assert.deepEqual(await post(new Blob([new Uint8Array(gzipSync('{"status": {}}'))]), { 'content-type': 'application/json', 'content-encoding': 'gzip' }), [415, { error: 'Compressed request bodies (gzip) are not accepted here' }]);
      assert.deepEqual(await post('status=mailbox', { 'content-type': 'text/plain' }), [415, { error: 'Agent calls carry JSON (Content-Type: application/json)' }]);
      // None of it cost the agent its place: a good report still goes through.
      const good = await post(JSON.stringify({ status: { name: 'malformed', mode: 'mailbox', address: null, product: 'watchdoc', version: '6.1.0', staged: [], freeDiskBytes: null }, results: [] }), { 'content-type': 'application/json' });
      assert.deepEqual(good, [200, { acknowledged: [], commands: [], callAgainInSeconds: null }]);
    } finally {
      await s.close();
    }
  });
});

describe('command records', () => {
  it('keeps what the master has not acknowledged, and drops acknowledged results after a week', async () => {
    const s = await setup('records');
    try {
      const dir = path.join(s.data, 'commands');
      const day = 24 * 3600_000;
      const record = (id: string, state: string, reported: boolean, finishedDaysAgo: number | null) => writeFile(path.join(dir, `${id}.json`), JSON.stringify({
        command: { id },
        result: { commandId: id, state, message: '', versionBefore: null, versionAfter: null, startedAt: new Date(Date.now() - 30 * day).toISOString(), finishedAt: finishedDaysAgo === null ? null : new Date(Date.now() - finishedDaysAgo * day).toISOString() },
        reported,
      }));
      await record('old-acknowledged-1', 'succeeded', true, 10);
      await record('old-acknowledged-2', 'failed', true, 8);
      await record('recent-acknowledged', 'staged', true, 2);
      await record('old-not-acknowledged', 'succeeded', false, 10);
      await record('still-running', 'running', true, null);
      assert.equal(await s.runner.prune(), 2);
      assert.deepEqual((await readdir(dir)).sort(), ['old-not-acknowledged.json', 'recent-acknowledged.json', 'still-running.json']);
      assert.deepEqual((await s.runner.outbox()).map((r) => r.commandId), ['old-not-acknowledged']);
      assert.ok(s.log.lines.some((l) => l.includes('"msg":"old command records removed"') && l.includes('"removed":2')));
    } finally {
      await s.close();
    }
  });
});

describe('answers the agent cannot use', () => {
  /**
   * A stand-in master on loopback whose report answers the test chooses: signed with the key the
   * agent trusts (then the agent checks what they say), or not (then it ignores them whatever they say).
   */
  async function fakeMaster(answers: { status: number; body: string; sign: 'master' | 'none' | 'intruder' }[]) {
    const masterKey = generateKeyPairSync('ed25519');
    const sessionKey = randomBytes(32);
    const intruderKey = randomBytes(32);
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const nonce = String(req.headers['x-propagator-nonce']);
        const agent = String(req.headers['x-propagator-agent-key']);
        const path = (req.url ?? '').replace(/\?.*$/, '');
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (path === '/api/agent/challenge') return res.writeHead(200, headers).end(JSON.stringify({ challenge: 'c' }));
        if (path === '/api/agent/session') {
          // A session as the master opens one: signed, with the session key sealed for the agent.
          const { exchangeKey } = JSON.parse(Buffer.concat(chunks).toString()) as { exchangeKey: string };
          const sealed = sealSessionKey(exchangeKey, 't.1.x', sessionKey);
          const body = JSON.stringify({ state: 'accepted', serverId: 1, token: 't.1.x', expiresInSeconds: 3600, ...sealed, serverTime: Date.now(), message: '' });
          headers['x-propagator-signature'] = signAnswer(masterKey.privateKey, { status: 200, path, agent, nonce, body });
          return res.writeHead(200, headers).end(body);
        }
        const answer = answers.shift() ?? { status: 500, body: '', sign: 'master' as const };
        if (answer.sign !== 'none') headers['x-propagator-answer-mac'] = macAnswer(answer.sign === 'master' ? sessionKey : intruderKey, { status: answer.status, path, agent, nonce, body: answer.body });
        res.writeHead(answer.status, headers).end(answer.body);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const data = path.join(work, `fake-${Math.random().toString(36).slice(2)}`);
    await mkdir(data, { recursive: true });
    const client = new MasterClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, null, await loadAgentKey(data), { name: 'n', masterFingerprint: null });
    client.setMasterKey(masterKey.publicKey.export({ type: 'spki', format: 'pem' }).toString());
    return { client, close: () => server.close() };
  }
  const status: AgentStatus = { name: 'n', mode: 'mailbox', address: null, product: 'watchdoc', version: '6.1.0', staged: [], freeDiskBytes: null };
  const failure = (p: Promise<unknown>) => p.then(() => 'accepted', (err: Error) => err.message);

  it('says so clearly when the master answers garbage', async () => {
    const fake = await fakeMaster([
      { status: 200, body: '<html>captive portal</html>', sign: 'master' },
      { status: 200, body: JSON.stringify({ acknowledged: 'all', commands: [] }), sign: 'master' },
      { status: 502, body: 'Bad Gateway', sign: 'master' },
      { status: 503, body: JSON.stringify({ error: 'The master is starting' }), sign: 'master' },
    ]);
    try {
      assert.equal(await failure(fake.client.report(status, [])), 'the master answered with something that is not JSON');
      assert.match(await failure(fake.client.report(status, [])), /^the master's answer does not follow the agent protocol \(.+\)$/);
      assert.equal(await failure(fake.client.report(status, [])), 'the master answered 502: HTTP 502');
      assert.equal(await failure(fake.client.report(status, [])), 'the master answered 503: The master is starting');
    } finally {
      fake.close();
    }
  });

  it('ignores answers not signed with its master\'s key, whatever they say', async () => {
    const forged = JSON.stringify({ acknowledged: [], callAgainInSeconds: null, commands: [{ id: 'forged-0001', type: 'apply', allowDowngrade: true,
      package: { sha256: 'a'.repeat(64), payloadSha256: 'b'.repeat(64), manifestSha256: 'c'.repeat(64), size: 1e9, product: 'watchdoc', version: '1.0', name: 'old' } }] });
    const fake = await fakeMaster([
      { status: 200, body: forged, sign: 'none' },
      { status: 200, body: forged, sign: 'intruder' },
      { status: 403, body: JSON.stringify({ error: 'this package is not yours' }), sign: 'none' },
    ]);
    try {
      const unsigned = 'the master\'s answer (200) is not signed with the master\'s key: ignored (is something between this agent and the master?)';
      assert.equal(await failure(fake.client.report(status, [])), unsigned);
      assert.equal(await failure(fake.client.report(status, [])), unsigned, 'signed by another key');
      assert.equal(await failure(fake.client.report(status, [])), unsigned.replace('(200)', '(403)'), 'a forged refusal changes nothing either');
    } finally {
      fake.close();
    }
  });
});
