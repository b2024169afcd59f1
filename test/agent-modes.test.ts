import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { access, readFile, readlink } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { newNonce } from '../lib/agent-keys.js';
import { signRequest } from '../lib/request-signing.js';
import { startAgentProcess, type AgentProcess } from './helpers/agent-process.js';
import { startCuttingProxy } from './helpers/cutting-proxy.js';
import { openTestDomain, type TestDomain } from './helpers/domain.js';
import { BASIC } from './helpers/master.js';
import { startMasterProcess, waitFor } from './helpers/master-process.js';
import { makeRelease } from './helpers/releases.js';
import { BIN, freePort, must } from './helpers/run.js';
import type { TestPki } from './helpers/test-pki.js';

const TOKEN = 'modes-enrollment-token-0123456789';

let d: TestDomain;
let work: string;
let pki: TestPki;
let m: TestDomain['m'];
let master: TestDomain['master'];
let agents: AgentProcess[];
let upload: TestDomain['upload'];
let finished: TestDomain['finished'];

before(async () => {
  d = await openTestDomain(TOKEN);
  ({ work, pki, m, master, agents, upload, finished } = d);
});
after(() => d.close());

async function start(name: string, mode: 'mailbox' | 'bidirectional', extra: string[] = [], options: { token?: boolean; masterUrl?: string; trust?: string } = {}) {
  const data = path.join(work, `agent-${name}`);
  const args = ['--master', options.masterUrl ?? master.url, '--name', name, '--mode', mode, '--data', data, '--trust', options.trust ?? pki.root,
    '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1', '--heartbeat', '1', ...extra];
  const agent = await startAgentProcess(args, options.token === false ? {} : { PROPAGATOR_ENROLL_TOKEN: TOKEN });
  agents.push(agent);
  return { agent, data };
}

describe('bidirectional mode', () => {
  it('is handed its work by the master at once, and keeps its status current', async () => {
    const { agent, data } = await start('bidi-1', 'bidirectional', ['--host', '127.0.0.1', '--port', '0']);
    assert.match(agent.address ?? '', /^http:\/\/127\.0\.0\.1:\d+$/);
    const servers = (await supertest(m.app).get('/api/servers').set('Authorization', BASIC)).body as { id: number; address: string; mode: string }[];
    assert.deepEqual(servers.find((s) => s.id === agent.serverId), { ...servers.find((s) => s.id === agent.serverId), address: agent.address, mode: 'bidirectional' });
    const pkgId = await upload(await makeRelease(work, pki.good.ecP256, '6.2.0'));
    const command = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkgId })).id);
    assert.deepEqual([command.state, command.versionAfter], ['succeeded', '6.2.0']);
    assert.ok(command.deliveredAt, 'pushed by the master');
    assert.equal(await readlink(path.join(data, 'current')), path.join('releases', '6.2.0'));
    const seen = (await m.db.get<{ last_seen: string }>('SELECT last_seen FROM servers WHERE id = ?', [agent.serverId]))?.last_seen ?? '';
    await waitFor(async () => ((await m.db.get<{ last_seen: string }>('SELECT last_seen FROM servers WHERE id = ?', [agent.serverId]))?.last_seen ?? '') > seen, 5000, 'a heartbeat');
  });

  it('obeys only calls signed by its master, each once', async () => {
    const { agent } = await start('bidi-sign', 'bidirectional', ['--host', '127.0.0.1', '--port', '0']);
    // A well-formed command for a package that does not exist: accepted, it fails at download.
    const body = JSON.stringify({ id: 'aaaaaaaa-1111', type: 'propagate', package: { sha256: 'a'.repeat(64), payloadSha256: 'b'.repeat(64), manifestSha256: 'c'.repeat(64), size: 1, product: 'watchdoc', version: '9.9', name: 'x' }, allowDowngrade: true });
    const post = (headers: Record<string, string>) => fetch(`${agent.address}/api/commands`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
    const unsigned = await post({});
    assert.equal(unsigned.status, 401);
    assert.deepEqual(await unsigned.json(), { error: 'the request is not signed by the master' });
    const intruder = generateKeyPairSync('ed25519').privateKey;
    const forged = await post(signRequest(intruder, { method: 'POST', path: '/api/commands', body, agentId: agent.serverId, nonce: newNonce() }));
    assert.deepEqual([forged.status, await forged.json()], [401, { error: 'the request signature does not match the master key' }]);
    const { privateKey } = await m.services.masterKey();
    const otherAgent = await post(signRequest(privateKey, { method: 'POST', path: '/api/commands', body, agentId: agent.serverId + 100, nonce: newNonce() }));
    assert.equal(otherAgent.status, 401, 'a signature made for another agent');
    const stale = await post(signRequest(privateKey, { method: 'POST', path: '/api/commands', body, agentId: agent.serverId, nonce: newNonce() }, Date.now() - 10 * 60_000));
    assert.deepEqual([stale.status, await stale.json()], [401, { error: 'the request signature is stale (check the clocks of master and slave)' }]);
    // A genuine call, recorded on the network and sent again within the signature's lifetime.
    const genuine = signRequest(privateKey, { method: 'POST', path: '/api/commands', body, agentId: agent.serverId, nonce: newNonce() });
    assert.equal((await post(genuine)).status, 202);
    const replayed = await post(genuine);
    assert.deepEqual([replayed.status, await replayed.json()], [401, { error: 'the request was already received once (a replay is refused)' }]);
    assert.match(agent.logs(), /refused a call not signed by the master/);
    assert.equal((await fetch(`${agent.address}/health`)).status, 200);

    // A stranger sending a big unsigned body is refused from its headers and cut off at once.
    const { port } = new URL(agent.address ?? '');
    const refusal = await new Promise<{ answer: string; closed: boolean }>((resolve) => {
      const socket = net.connect(Number(port), '127.0.0.1', () => socket.write(`POST /api/commands HTTP/1.1\r\nHost: x\r\nContent-Length: ${1024 * 1024}\r\n\r\n${'x'.repeat(1024)}`));
      let answer = '';
      const timer = setTimeout(() => resolve({ answer, closed: false }), 5000);
      socket.on('data', (c: Buffer) => (answer += c.toString()));
      socket.on('close', () => {
        clearTimeout(timer);
        resolve({ answer, closed: true });
      });
      socket.on('error', () => undefined);
    });
    assert.match(refusal.answer, /^HTTP\/1\.1 401 [\s\S]*"error":"the request is not signed by the master"/);
    assert.equal(refusal.closed, true);

    // Restarted, the agent still knows the calls it received.
    await agent.stop();
    const again = await start('bidi-sign', 'bidirectional', ['--host', '127.0.0.1', '--port', '0'], { token: false });
    const afterRestart = await fetch(`${again.agent.address}/api/commands`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...genuine } });
    assert.deepEqual([afterRestart.status, await afterRestart.json()], [401, { error: 'the request was already received once (a replay is refused)' }]);
  });

  it('is retried with backoff while unreachable, and served when it is back', async () => {
    const port = await freePort();
    const args = ['--host', '127.0.0.1', '--port', String(port)];
    const first = await start('bidi-down', 'bidirectional', args);
    await first.agent.stop();
    const pkgId = await upload(await makeRelease(work, pki.good.rsa, '6.2.5'));
    const queued = await m.services.commands.enqueue({ serverId: first.agent.serverId, type: 'apply', packageId: pkgId });
    await waitFor(async () => (await m.services.commands.get(queued.id)).attempts >= 2, 10_000, 'two delivery attempts');
    const waiting = await m.services.commands.get(queued.id);
    assert.equal(waiting.state, 'queued');
    assert.match(waiting.message, new RegExp(`^cannot reach the agent at http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\); trying again in \\d+ s$`));
    await start('bidi-down', 'bidirectional', args, { token: false });
    const done = await finished(queued.id);
    assert.deepEqual([done.state, done.versionAfter], ['succeeded', '6.2.5']);
  });
});

describe('what the agent checks and survives', () => {
  it('resumes a download cut midway (HTTP Range) and verifies the whole', async () => {
    const target = Number(new URL(master.url).port);
    const proxy = await startCuttingProxy(target, { match: /^GET \/api\/agent\/packages\//, cutAfterBytes: 700_000 });
    try {
      const { agent } = await start('resume-1', 'mailbox', [], { masterUrl: proxy.url });
      const pkgId = await upload(await makeRelease(work, pki.good.rsa, '6.2.0', { padding: 3 * 1024 * 1024 }));
      const result = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'propagate', packageId: pkgId })).id);
      assert.deepEqual([result.state, result.message], ['succeeded', 'staged watchdoc 6.2.0']);
      assert.equal(proxy.cuts, 1);
      const downloads = proxy.requests.filter((r) => r.startsWith('GET /api/agent/packages/'));
      assert.equal(downloads.length, 2);
      assert.doesNotMatch(downloads[0] ?? '', /\r\nrange:/i);
      assert.match(downloads[1] ?? '', /\r\nrange: bytes=\d{5,}-/i);
      assert.match(agent.logs(), /"msg":"download resumed"/);
    } finally {
      await proxy.close();
    }
  });

  it('checks packages with its own trust store, whatever the master accepted', async () => {
    const { agent } = await start('own-trust', 'mailbox', [], { trust: pki.otherRoot });
    const pkgId = await upload(await makeRelease(work, pki.good.rsa, '6.2.0'));
    const result = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'propagate', packageId: pkgId })).id);
    assert.equal(result.state, 'failed');
    assert.equal(result.message, 'This update package is not secure: the certificate chain does not lead to a trusted root: no trusted certificate "CN=Test Update Root CA" issued "CN=Test Update Intermediate CA"');
  });

  it('undoes a half-done install after being killed mid-apply, and reports the true version', async () => {
    const { agent, data } = await start('killed-1', 'mailbox');
    const pkgId = await upload(await makeRelease(work, pki.good.rsa, '6.5.0', { apply: 'touch ../../apply-started; sleep 60' }));
    const command = await m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkgId });
    await waitFor(() => access(path.join(data, 'apply-started')).then(() => true, () => false), 20_000, 'the apply hook to start');
    await agent.stop('SIGKILL');
    const restarted = await start('killed-1', 'mailbox', [], { token: false });
    assert.equal(restarted.agent.serverId, agent.serverId);
    const result = await finished(command.id);
    assert.deepEqual([result.state, result.message, result.versionAfter], ['failed', 'the agent stopped during the install of 6.5.0 (applying); rolled back to 6.1.0', '6.1.0']);
    await assert.rejects(readlink(path.join(data, 'current')), { code: 'ENOENT' });
    await assert.rejects(access(path.join(data, 'releases', '6.5.0')));
    const view = ((await supertest(m.app).get('/api/servers').set('Authorization', BASIC)).body as { id: number; version: string }[]).find((s) => s.id === agent.serverId);
    assert.equal(view?.version, '6.1.0');
    assert.match(restarted.agent.logs(), /agent restarted during an install; rolled back/);
    const hookLog = await readFile(path.join(data, 'hook-log.txt'), 'utf8');
    assert.equal(hookLog.split('\n').filter((l) => l.includes('hooks/apply')).length, 1, 'the interrupted install was not run again');
  });
});

describe('TLS', () => {
  it('enrolls with a master over HTTPS whose certificate it trusts with --ca', async () => {
    const cert = path.join(work, 'master-tls.pem');
    const key = path.join(work, 'master-tls.key');
    await must('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
    const tlsMaster = await startMasterProcess(['--data', path.join(work, 'tls-master'), '--trust', pki.root, '--tls-cert', cert, '--tls-key', key, '--auto-accept'],
      { PROPAGATOR_ADMIN_PASSWORD: 'tls-admin-password', PROPAGATOR_ENROLL_TOKEN: TOKEN });
    try {
      const { agent } = await start('tls-agent', 'mailbox', ['--ca', cert], { masterUrl: tlsMaster.url });
      const auth = `Basic ${Buffer.from('admin:tls-admin-password').toString('base64')}`;
      const ca = await readFile(cert);
      const body = await new Promise<string>((resolve, reject) => {
        https.get(`${tlsMaster.url}/api/servers`, { ca, headers: { authorization: auth } }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve(text));
        }).on('error', reject);
      });
      const servers = JSON.parse(body) as { id: number; name: string; status: string }[];
      assert.deepEqual(servers.filter((s) => s.id === agent.serverId).map((s) => [s.name, s.status]), [['tls-agent', 'online']]);
      await agent.stop();
      // Without --ca, the agent cannot trust the master: it says why and keeps retrying.
      const child = spawn(process.execPath, [BIN, 'agent', '--master', tlsMaster.url, '--name', 'tls-no-ca', '--mode', 'mailbox',
        '--data', path.join(work, 'tls-no-ca'), '--trust', pki.root], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PROPAGATOR_ENROLL_TOKEN: TOKEN } });
      let output = '';
      child.stdout.on('data', (c: Buffer) => (output += c.toString()));
      try {
        await waitFor(async () => output.includes('cannot enroll yet; retrying'), 10_000, 'the TLS refusal');
        assert.match(output, /"error":"cannot reach the master: (DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN)"/);
      } finally {
        child.kill('SIGKILL');
      }
    } finally {
      await tlsMaster.stop();
    }
  });
});
