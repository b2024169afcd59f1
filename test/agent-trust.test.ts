import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, readlink } from 'node:fs/promises';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { toAgentCommand } from '../server/services/agent-service.js';
import { startAgentProcess } from './helpers/agent-process.js';
import { openTestDomain, type TestDomain } from './helpers/domain.js';
import { BASIC, createTestMaster, listenMaster } from './helpers/master.js';
import { waitFor } from './helpers/master-process.js';
import { makeRelease } from './helpers/releases.js';
import { ROOT, run } from './helpers/run.js';
import { newExchange } from '../lib/session-crypto.js';
import { SimulatedAgent } from './helpers/simulated-agent.js';
import { startTamperingProxy, type Tampering } from './helpers/tampering-proxy.js';

/**
 * Attacks from the network on a plain-HTTP link between agents and their master, made by a real
 * man in the middle (a relay that rewrites answers and downloads) in front of real agent processes.
 */
const TOKEN = 'trust-enrollment-token-0123456789';
let d: TestDomain;

before(async () => {
  d = await openTestDomain(TOKEN);
});
after(() => d.close());

const exists = (p: string) => readlink(p).then(() => true, () => false);

async function agentBehind(proxyUrl: string, name: string) {
  const data = path.join(d.work, `agent-${name}`);
  const agent = await startAgentProcess(['--master', proxyUrl, '--name', name, '--mode', 'mailbox', '--data', data, '--trust', d.pki.root,
    '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1'], { PROPAGATOR_ENROLL_TOKEN: TOKEN });
  d.agents.push(agent);
  return { agent, data };
}

describe('a man in the middle of a mailbox link', () => {
  it('cannot order a downgrade through a poll answer, nor make the agent download anything', async () => {
    // An older package, validly signed: exactly what an attacker would like to push.
    const older = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.0.5'));
    const olderFile = await readFile(d.m.store.pathFor((await d.m.services.packages.get(older)).sha256));
    const stored = await d.m.services.packages.get(older);
    const forged = toAgentCommand({
      id: 'forged-downgrade-1', packageSha256: stored.sha256, payloadSha256: stored.payload.sha256, manifestSha256: stored.manifestSha256,
      packageSize: 1024 ** 3, product: 'watchdoc', version: '6.0.5', packageName: 'forged', type: 'apply', allowDowngrade: true,
    } as Parameters<typeof toAgentCommand>[0]);
    let active = true;
    const tampering: Tampering = {
      rewriteAnswer: (route, body) => {
        if (!active || !route.startsWith('/api/agent/report')) return null;
        const answer = JSON.parse(body) as { commands: unknown[] };
        return JSON.stringify({ ...answer, commands: [forged] });
      },
      forgeDownload: (route) => (active && route.includes(stored.sha256) ? { bytes: olderFile, contentLength: olderFile.length } : null),
    };
    const proxy = await startTamperingProxy(d.master.url, tampering);
    try {
      const { agent, data } = await agentBehind(proxy.url, 'mitm-1');
      await waitFor(async () => proxy.rewritten >= 3, 10_000, 'forged answers');
      assert.match(agent.logs(), /the master's answer \(200\) is not signed with the master's key: ignored \(is something between this agent and the master\?\)/);
      assert.doesNotMatch(agent.logs(), /forged-downgrade-1/, 'the forged command was never accepted');
      assert.ok(!proxy.requests.some((r) => r.includes('/api/agent/packages/')), 'nothing was downloaded');
      assert.equal(await exists(path.join(data, 'current')), false, 'still the initial release');
      assert.deepEqual(await readdir(path.join(data, 'commands')), []);

      // The attacker leaves: the agent had only backed off, and works again.
      active = false;
      const pkg = await d.upload(await makeRelease(d.work, d.pki.good.ecP256, '6.2.0'));
      const done = await d.finished((await d.m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkg })).id, 60_000);
      assert.deepEqual([done.state, done.versionAfter], ['succeeded', '6.2.0']);
    } finally {
      await proxy.close();
    }
  });

  it('stops a forged download at the first bytes that cannot be the announced package, and keeps nothing of it', async () => {
    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.3.0', { padding: 8 * 1024 * 1024 }));
    const stored = await d.m.services.packages.get(pkg);
    const junk = randomBytes(stored.size);
    const proxy = await startTamperingProxy(d.master.url, { forgeDownload: (route) => (route.includes(stored.sha256) ? { bytes: junk, contentLength: junk.length } : null) });
    try {
      const { agent, data } = await agentBehind(proxy.url, 'mitm-junk');
      const result = await d.finished((await d.m.services.commands.enqueue({ serverId: agent.serverId, type: 'propagate', packageId: pkg })).id);
      assert.equal(result.state, 'failed');
      assert.match(result.message, /^This update package is corrupt: /);
      // The kernel buffers megabytes on loopback whatever the agent does: what it took in tells.
      const line = agent.logs().split('\n').find((l) => l.includes('"msg":"package refused while downloading"')) ?? '';
      const received = Number(/"receivedBytes":(\d+)/.exec(line)?.[1]);
      assert.ok(received > 0 && received <= 1024 * 1024, `the agent stopped at the first chunk (${received} of ${stored.size} bytes read)`);
      assert.deepEqual(await readdir(path.join(data, 'staging')), [], 'no partial file left');
    } finally {
      await proxy.close();
    }
  });

  it('stops a validly signed substitute as soon as its manifest has passed', async () => {
    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.3.2', { padding: 8 * 1024 * 1024 }));
    const stored = await d.m.services.packages.get(pkg);
    // Another genuine package of the publisher, served in its place (chunked: no length to give it away).
    const substitute = await readFile(await makeRelease(d.work, d.pki.good.rsa, '6.3.3', { padding: 8 * 1024 * 1024 }));
    const proxy = await startTamperingProxy(d.master.url, { forgeDownload: (route) => (route.includes(stored.sha256) ? { bytes: substitute, contentLength: null } : null) });
    try {
      const { agent, data } = await agentBehind(proxy.url, 'mitm-substitute');
      const result = await d.finished((await d.m.services.commands.enqueue({ serverId: agent.serverId, type: 'propagate', packageId: pkg })).id);
      assert.deepEqual([result.state, result.message], ['failed', 'the package the master served is not the one it announced (another manifest)']);
      const line = agent.logs().split('\n').find((l) => l.includes('"msg":"package refused while downloading"')) ?? '';
      const received = Number(/"receivedBytes":(\d+)/.exec(line)?.[1]);
      assert.ok(received > 0 && received <= 1024 * 1024, `stopped at the manifest (${received} of ${substitute.length} bytes read)`);
      assert.deepEqual(await readdir(path.join(data, 'staging')), []);
    } finally {
      await proxy.close();
    }
  });

  it('checks a resumed download from its first byte: junk sent after a cut stops it at once', async () => {
    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.3.4', { padding: 8 * 1024 * 1024 }));
    const stored = await d.m.services.packages.get(pkg);
    const proxy = await startTamperingProxy(d.master.url, {
      // Cut after the first header and the manifest: the junk then comes where the next header must be.
      cutFirstDownloadAfter: 1024,
      forgeResume: (route, from, total) => (route.includes(stored.sha256) ? randomBytes(total - from) : null),
    });
    try {
      const { agent, data } = await agentBehind(proxy.url, 'mitm-resume');
      const result = await d.finished((await d.m.services.commands.enqueue({ serverId: agent.serverId, type: 'propagate', packageId: pkg })).id);
      assert.equal(result.state, 'failed', `${result.message}\n${proxy.requests.join('\n')}\n${agent.logs()}`);
      assert.match(result.message, /^This update package is corrupt: /);
      assert.match(agent.logs(), /"msg":"download resumed"/);
      const line = agent.logs().split('\n').find((l) => l.includes('"msg":"package refused while downloading"')) ?? '';
      const received = Number(/"receivedBytes":(\d+)/.exec(line)?.[1]);
      assert.ok(received > 0 && received <= 2 * 1024 * 1024, `stopped at the first junk (${received} of ${stored.size} bytes read, the 1 KiB before the cut read again)`);
      assert.deepEqual(await readdir(path.join(data, 'staging')), []);
    } finally {
      await proxy.close();
    }
  });

  it('never writes more than the size the signed command announced', async () => {
    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.3.5', { padding: 1024 * 1024 }));
    const stored = await d.m.services.packages.get(pkg);
    const real = await readFile(d.m.store.pathFor(stored.sha256));
    // The real package, then 8 MiB more, with no length announced (chunked).
    const padded = Buffer.concat([real, randomBytes(8 * 1024 * 1024)]);
    const proxy = await startTamperingProxy(d.master.url, { forgeDownload: (route) => (route.includes(stored.sha256) ? { bytes: padded, contentLength: null } : null) });
    try {
      const { agent, data } = await agentBehind(proxy.url, 'mitm-long');
      const result = await d.finished((await d.m.services.commands.enqueue({ serverId: agent.serverId, type: 'propagate', packageId: pkg })).id);
      assert.equal(result.state, 'failed');
      assert.ok(
        result.message === `the master sent more than the ${stored.size} bytes it announced; the download was stopped` || /^This update package is corrupt: .*after the end of the archive/.test(result.message),
        result.message,
      );
      const sent = [...proxy.forgedBytesSent.values()][0] ?? 0;
      assert.ok(sent < padded.length, `the agent hung up (${sent} of ${padded.length} bytes sent)`);
      assert.deepEqual(await readdir(path.join(data, 'staging')), []);
    } finally {
      await proxy.close();
    }
  });
});

/** Sends a request head and the first bytes of a large body, then waits for what the master does. */
function slowRequest(url: string, head: string): Promise<{ answer: string; closedByMaster: boolean; ms: number }> {
  const { port } = new URL(url);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1', () => {
      socket.write(`${head}\r\nContent-Type: application/json\r\nContent-Length: ${1024 * 1024}\r\n\r\n${'{"status":'.padEnd(1024, ' ')}`);
    });
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ answer, closedByMaster: false, ms: Date.now() - started });
    }, 5000);
    socket.on('data', (c: Buffer) => (answer += c.toString()));
    socket.on('end', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ answer, closedByMaster: true, ms: Date.now() - started });
    });
    socket.on('error', reject);
  });
}

describe('strangers on the agent API', () => {
  it('are refused from their headers alone, before their body is read, and disconnected', async () => {
    const host = `Host: ${new URL(d.master.url).host}\r\nX-Propagator-Nonce: ${'n'.repeat(22)}`;
    const attempts = await Promise.all([
      ...Array.from({ length: 40 }, () => slowRequest(d.master.url, `POST /api/agent/report HTTP/1.1\r\n${host}`)),
      ...Array.from({ length: 10 }, () => slowRequest(d.master.url, `POST /api/agent/report HTTP/1.1\r\n${host}\r\nAuthorization: Bearer 1.99999999999.${'A'.repeat(43)}`)),
    ]);
    for (const a of attempts) {
      assert.match(a.answer, /^HTTP\/1\.1 401 /);
      assert.match(a.answer, /\r\nConnection: close\r\n/i);
      assert.equal(a.closedByMaster, true, 'the master hung up instead of reading the megabyte');
    }
    assert.match(attempts[0]?.answer ?? '', /"error":"Agent session required \(Authorization: Bearer <session token>\)"/);
    assert.match(attempts[45]?.answer ?? '', /"error":"The agent session is not valid \(the server was removed, or its key changed\); open a new one"/);

    const enroll = await slowRequest(d.master.url, `POST /api/agent/enroll HTTP/1.1\r\n${host}\r\nAuthorization: Bearer not-the-enrollment-token`);
    assert.match(enroll.answer, /^HTTP\/1\.1 401 [\s\S]*"error":"The enrollment token is wrong/);
    assert.equal(enroll.closedByMaster, true);
    const session = await slowRequest(d.master.url, `POST /api/agent/session HTTP/1.1\r\n${host}`);
    assert.match(session.answer, /^HTTP\/1\.1 413 [\s\S]*"error":"The request body is too large"/, 'a session request is a few hundred bytes');
    assert.equal(session.closedByMaster, true);
  });

  it('cannot open a session for an accepted server without its key', async () => {
    const real = await new SimulatedAgent(d.master.url, 'keyed-1').join(TOKEN);
    const thief = new SimulatedAgent(d.master.url, 'keyed-1');
    // The thief knows the name and the public fingerprint, not the private key.
    Object.assign(thief, { masterKey: real.masterKey });
    const challenge = await thief.call('GET', '/api/agent/challenge');
    const claim = JSON.stringify({ name: 'keyed-1', keyFingerprint: real.fingerprint, challenge: (challenge.body as { challenge: string }).challenge, exchangeKey: newExchange().publicRaw });
    const refused = await thief.call('POST', '/api/agent/session', { body: claim, prove: true });
    assert.equal(refused.status, 401);
    assert.deepEqual(refused.body, { error: 'This agent is not a server of the domain: it was removed from the console, or "keyed-1" was accepted with another key; enroll it again with an enrollment token' });
    const stale = await real.call('POST', '/api/agent/session', { body: JSON.stringify({ name: 'keyed-1', keyFingerprint: real.fingerprint, challenge: `${Math.floor(Date.now() / 1000) - 600}.${'a'.repeat(16)}.${'b'.repeat(43)}`, exchangeKey: newExchange().publicRaw }), prove: true });
    assert.deepEqual([stale.status, stale.body], [409, { error: 'The session challenge is stale, used, or was not made by this master; ask for a new one' }]);
    assert.equal((await real.report(undefined)).status, 200, 'the real agent is unaffected');
  });

  it('cannot use a session token overheard on the network without the session key', async () => {
    const real = await new SimulatedAgent(d.master.url, 'overheard-1').join(TOKEN);
    const listener = new SimulatedAgent(d.master.url, 'overheard-1');
    // What a listener on plain HTTP sees: the token and the agent's public fingerprint, never the key.
    Object.assign(listener, { token: real.token, sessionKey: randomBytes(32), fingerprint: real.fingerprint });
    const forged = await listener.report({ status: listener.status({ version: '9.9.9' }), results: [] });
    assert.deepEqual([forged.status, forged.body], [401, { error: 'This call does not carry the session\'s MAC (a session token alone is not enough); open a new session' }]);
    const download = await listener.call('GET', `/api/agent/packages/${'a'.repeat(64)}`, { session: true });
    assert.equal(download.status, 401);
    await new Promise((r) => setTimeout(r, 1200));
    const view = (await fetch(`${d.master.url}/api/servers`, { headers: { authorization: BASIC } }).then((r) => r.json()) as { name: string; version: string }[]).find((s) => s.name === 'overheard-1');
    assert.equal(view?.version, '6.1.0', 'the forged version was not recorded');
    assert.equal((await real.report(undefined)).signed, true, 'the real agent goes on, its answers MAC\'d');
  });

  it('cannot replay a recorded session call, nor one stamped far from the master\'s time', async () => {
    const agent = await new SimulatedAgent(d.master.url, 'replayed-1').join(TOKEN);
    const body = JSON.stringify({ status: agent.status({ version: '6.1.0' }), results: [] });
    const nonce = 'recorded-nonce-0000000001';
    const headers = agent.sessionHeaders('POST', '/api/agent/report', body, nonce);
    const send = () => agent.call('POST', '/api/agent/report', { body, nonce, headers });
    assert.equal((await send()).status, 200);
    const replayed = await send();
    assert.deepEqual([replayed.status, replayed.body], [401, { error: 'This call was already received once (a replay is refused)' }]);
    agent.clockOffset -= 10 * 60_000;
    const stale = await agent.report(undefined);
    assert.deepEqual([stale.status, stale.body], [401, { error: 'This call is stamped too far from the master\'s time (a recorded call, or a session opened long ago); open a new session' }]);
    // The agent's own clock never matters: it stamps with the offset learnt at the session's opening.
    agent.clockOffset += 10 * 60_000;
    assert.equal((await agent.report(undefined)).status, 200);
  });

  it('cannot replay a recorded session opening', async () => {
    const agent = await new SimulatedAgent(d.master.url, 'reopened-1').join(TOKEN);
    const challenge = ((await agent.call('GET', '/api/agent/challenge')).body as { challenge: string }).challenge;
    const body = JSON.stringify({ name: 'reopened-1', keyFingerprint: agent.fingerprint, challenge, exchangeKey: newExchange().publicRaw });
    const nonce = 'recorded-session-nonce-001';
    assert.equal((await agent.call('POST', '/api/agent/session', { body, nonce, prove: true })).status, 200);
    const replayed = await agent.call('POST', '/api/agent/session', { body, nonce, prove: true });
    assert.deepEqual([replayed.status, replayed.body, replayed.headers.get('x-propagator-signature')], [409, { error: 'The session challenge is stale, used, or was not made by this master; ask for a new one' }, null]);
  });

  it('cannot take over a name by racing its real agent under --auto-accept', async () => {
    for (let i = 0; i < 10; i++) {
      const name = `race-${i}`;
      const answers = await Promise.all([new SimulatedAgent(d.master.url, name).enroll(TOKEN), new SimulatedAgent(d.master.url, name).enroll(TOKEN)]);
      assert.deepEqual(answers.map((a) => a.status).sort(), [201, 202], `${name}: one accepted, the other waits for the administrator`);
    }
  });

  it('cannot make the master read a huge answer from a bidirectional agent', async () => {
    let written = 0;
    let closedAfterMs = 0;
    const hostile = http.createServer((req, res) => {
      req.resume();
      const started = Date.now();
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(1024 ** 3) });
      const piece = Buffer.alloc(1024 * 1024, 0x20);
      const pump = () => {
        while (written < 1024 ** 3 && !res.destroyed) {
          written += piece.length;
          if (!res.write(piece)) return void res.once('drain', pump);
        }
      };
      res.on('close', () => {
        closedAfterMs = Date.now() - started;
      });
      pump();
    });
    await new Promise<void>((r) => hostile.listen(0, '127.0.0.1', r));
    try {
      const address = `http://127.0.0.1:${(hostile.address() as AddressInfo).port}`;
      const agent = await new SimulatedAgent(d.master.url, 'hostile-bidi').join(TOKEN, { mode: 'bidirectional', address });
      const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.3.9'));
      const command = await d.m.services.commands.enqueue({ serverId: agent.serverId as number, type: 'propagate', packageId: pkg });
      await waitFor(async () => (await d.m.services.commands.get(command.id)).state === 'delivered', 10_000, 'the delivery');
      await waitFor(async () => closedAfterMs > 0, 10_000, 'the master to hang up');
      assert.ok(written < 64 * 1024 * 1024, `the master hung up after the status (${written} bytes pushed at it, of a gigabyte)`);
    } finally {
      hostile.close();
    }
  });

  it('get at most 10 enrollment guesses answered per address, however many they send at once', async () => {
    // A master of its own: this leaves the address locked out of enrollment for the window.
    const fresh = await createTestMaster(d.pki.root, { enrollToken: TOKEN });
    const served = await listenMaster(fresh);
    after(async () => {
      await served.close();
      await fresh.cleanup();
    });
    const guesses = await Promise.all(Array.from({ length: 300 }, (_, i) => new SimulatedAgent(served.url, `guess-${i}`).enroll(`wrong-token-${String(i).padStart(20, '0')}`)));

    const statuses = guesses.map((g) => g.status);
    assert.equal(statuses.filter((s) => s === 401).length, 10);
    assert.equal(fresh.logs.filter((l) => l.includes('"msg":"enrollment refused: wrong token"')).length, 10, 'only 10 guesses were answered');
    assert.equal(statuses.filter((s) => s === 429).length, 290);
    assert.deepEqual(guesses.find((g) => g.status === 429)?.body, { error: 'Too many failed enrollments from this address; wait 15 minutes and try again' });
    assert.match(guesses.find((g) => g.status === 429)?.headers.get('retry-after') ?? '', /^\d+$/);
  });

  it('leave nothing behind once refused: their requests are freed, not held until a deadline', async () => {
    // In a process of its own, with the garbage collector at hand: the master's request deadlines
    // (server/http/timeouts.ts) in front of a route that refuses without reading the body.
    const script = `
      import express from 'express';
      import http from 'node:http';
import net from 'node:net';
      import { requestTimeouts } from ${JSON.stringify(path.join(ROOT, 'dist', 'server', 'http', 'timeouts.js'))};
      let freed = 0;
      const registry = new FinalizationRegistry(() => freed++);
      const app = express();
      app.use(requestTimeouts(60_000, { warn() {}, info() {}, error() {}, debug() {}, enabled: () => false }));
      app.use((req, res) => { registry.register(req, 0); res.set('Connection', 'close').status(401).end('{}'); });
      const server = app.listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      const { port } = server.address();
      for (let i = 0; i < 200; i++) await new Promise((done) => {
        const s = net.connect(port, '127.0.0.1', () => s.write('POST /x HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 1048576\\r\\n\\r\\n' + ' '.repeat(1024)));
        s.on('data', () => undefined); s.on('close', done); s.on('error', done);
      });
      for (let i = 0; i < 10; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 50)); }
      process.stdout.write(String(freed));
      process.exit(0);`;
    const result = await run(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { cwd: ROOT });
    assert.equal(result.code, 0, result.stderr);
    assert.ok(Number(result.stdout) >= 190, `${result.stdout} of 200 refused requests freed`);
  });
});
