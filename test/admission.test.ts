import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { keyFingerprint } from '../lib/agent-keys.js';
import { runAgentToExit, spawnAgentProcess, type AgentProcess } from './helpers/agent-process.js';
import { openTestDomain, type TestDomain } from './helpers/domain.js';
import { addServerRow, BASIC, createTestMaster, csrfOf, listenMaster, loginAgent } from './helpers/master.js';
import { waitFor } from './helpers/master-process.js';
import { makeRelease } from './helpers/releases.js';
import { propagator } from './helpers/run.js';
import { newExchange } from '../lib/session-crypto.js';
import { SimulatedAgent } from './helpers/simulated-agent.js';

/**
 * Admission of servers: nothing joins the domain, and no server changes hands, unless the
 * administrator decided it. Real agent processes against a master on loopback without auto-accept.
 */
const TOKEN = 'admission-enrollment-token-0123456789';
let d: TestDomain;

before(async () => {
  d = await openTestDomain(TOKEN, { autoAccept: false });
});
after(() => d.close());

function agentArgs(name: string, extra: string[] = []) {
  const data = path.join(d.work, `agent-${name}`);
  return { data, args: ['--master', d.master.url, '--name', name, '--mode', 'mailbox', '--data', data, '--trust', d.pki.root, '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1', ...extra] };
}

function spawn(name: string, extra: string[] = [], env: NodeJS.ProcessEnv = { PROPAGATOR_ENROLL_TOKEN: TOKEN }) {
  const { data, args } = agentArgs(name, extra);
  const starting = spawnAgentProcess(args, env);
  starting.started.then((a) => d.agents.push(a), () => undefined);
  return { ...starting, data };
}

const api = () => supertest(d.m.app);

interface RequestJson { id: number; name: string; state: string; mode: string; address: string | null; product: string; version: string; keyFingerprint: string; requestedFrom: string }

async function pending(): Promise<RequestJson[]> {
  return (await api().get('/api/servers?state=pending').set('Authorization', BASIC).expect(200)).body as RequestJson[];
}

/** The fingerprint an agent process logged for its own key. */
function loggedFingerprint(logs: string): string {
  return /"keyFingerprint":"(SHA256:[A-Za-z0-9+/]{43})"/.exec(logs)?.[1] ?? '';
}

async function acceptedAgent(name: string): Promise<{ agent: AgentProcess; data: string }> {
  const starting = spawn(name);
  await waitFor(async () => (await pending()).some((r) => r.name === name), 15_000, `${name} to ask for admission`);
  const request = (await pending()).find((r) => r.name === name) as RequestJson;
  await api().post(`/api/servers/requests/${request.id}/accept`).set('Authorization', BASIC).expect(200);
  return { agent: await starting.started, data: starting.data };
}

describe('a new server', () => {
  it('waits for the administrator, who sees its name, address, product, version and key, and accepts it in the console', async () => {
    const tokenFile = path.join(d.work, 'enroll-token');
    await writeFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const starting = spawn('print-new', ['--enroll-token-file', tokenFile], {});
    await waitFor(async () => starting.logs().includes('waiting for the administrator to accept this server in the master console (New servers)'), 15_000, 'the agent to wait');
    // The token was never on the command line, where every user of the machine can read it.
    const cmdline = await readFile(`/proc/${starting.child.pid}/cmdline`, 'utf8');
    assert.ok(!cmdline.includes(TOKEN) && cmdline.includes('--enroll-token-file'));
    const fingerprint = loggedFingerprint(starting.logs());
    const request = (await pending()).find((r) => r.name === 'print-new');
    assert.deepEqual(request && { ...request, id: 0, requestedAt: undefined }, {
      id: 0, name: 'print-new', state: 'pending', mode: 'mailbox', address: null, product: 'watchdoc', version: '6.1.0', keyFingerprint: fingerprint,
      requestedFrom: request?.requestedFrom, requestedAt: undefined, decidedBy: null, decidedAt: null,
    });
    assert.match(request?.requestedFrom ?? '', /^(::ffff:)?127\.0\.0\.1$/);
    assert.ok(!(await api().get('/api/servers').set('Authorization', BASIC)).body.some((s: { name: string }) => s.name === 'print-new'), 'not a server of the domain yet');

    const { agent: browser } = await loginAgent(d.m.app);
    const page = await browser.get('/servers/new').expect(200);
    assert.match(page.text, new RegExp(`<tr data-request-id="${request?.id}">[\\s\\S]*?print-new[\\s\\S]*?127\\.0\\.0\\.1[\\s\\S]*?${fingerprint.replace(/[+/]/g, '\\$&')}`));
    assert.match(page.text, /New servers <span class="badge warn" id="pending-count">\d+<\/span>/);
    await browser.post(`/servers/requests/${request?.id}/accept`).type('form').send({ _csrf: csrfOf(page.text) }).expect(303);
    const agent = await starting.started;
    assert.match(agent.logs(), /"msg":"accepted by the administrator"/);
    const server = (await api().get('/api/servers').set('Authorization', BASIC)).body.find((s: { name: string }) => s.name === 'print-new');
    assert.deepEqual([server?.id, server?.keyFingerprint], [agent.serverId, fingerprint]);
    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.2.0'));
    const done = await d.finished((await d.m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkg })).id);
    assert.deepEqual([done.state, done.versionAfter], ['succeeded', '6.2.0']);
  });

  it('is refused for good once rejected: the agent stops and says why', async () => {
    const starting = spawn('print-rejected');
    await waitFor(async () => (await pending()).some((r) => r.name === 'print-rejected'), 15_000, 'the request');
    const request = (await pending()).find((r) => r.name === 'print-rejected') as RequestJson;
    const rejected = await api().post(`/api/servers/requests/${request.id}/reject`).set('Authorization', BASIC).expect(200);
    assert.equal(rejected.body.name, 'print-rejected');
    const failure = await starting.started.then(() => null, (err: { code?: number; output?: string }) => err);
    assert.equal(failure?.code, 2);
    assert.match(failure?.output ?? '', /propagator: the administrator rejected this server \("print-rejected", key SHA256:/);
    assert.equal((await api().get('/api/servers?state=rejected').set('Authorization', BASIC)).body.some((r: RequestJson) => r.name === 'print-rejected'), true);
    // Started again, it asks again and is told the same.
    const again = await runAgentToExit(agentArgs('print-rejected').args, { PROPAGATOR_ENROLL_TOKEN: TOKEN });
    assert.equal(again.code, 2);
    assert.match(again.output, /propagator: the administrator rejected this server \("print-rejected", key SHA256:\S+\); remove its data folder's identity\.json and agent-key\.pem to ask again/);
  });
});

describe('an impostor holding the enrollment token', () => {
  it('never takes over an accepted server: its enrollment waits, it gets no session, the real agent keeps working', async () => {
    const { agent, data } = await acceptedAgent('print-a');
    const realKey = loggedFingerprint(agent.logs());
    const impostor = new SimulatedAgent(d.master.url, 'print-a');
    const enrolled = await impostor.enroll(TOKEN);
    assert.equal(enrolled.status, 202);
    assert.equal(enrolled.signed, true, 'the answer is signed with the master key');
    assert.deepEqual((enrolled.body as { state: string; serverId: number | null }).state, 'pending');
    assert.equal((enrolled.body as { serverId: number | null }).serverId, null);
    assert.equal((enrolled.body as { message: string }).message, `waiting for the administrator to accept "print-a" in the master console (New servers); key fingerprint ${impostor.fingerprint}`);
    const session = await impostor.openSession();
    assert.deepEqual([session.status, (session.body as { state: string }).state, impostor.token], [200, 'pending', null]);
    // Whatever it invents, it cannot speak for print-a.
    impostor.token = `${agent.serverId}.${Math.floor(Date.now() / 1000) + 3600}.${'A'.repeat(43)}`;
    impostor.sessionKey = randomBytes(32);
    const forged = await impostor.report({ status: impostor.status(), results: [{ commandId: 'aaaaaaaa-0000', state: 'succeeded', message: 'installed', versionBefore: '6.1.0', versionAfter: '9.9', startedAt: new Date().toISOString(), finishedAt: new Date().toISOString() }] });
    assert.deepEqual([forged.status, forged.body], [401, { error: 'The agent session is not valid (the server was removed, or its key changed); open a new one' }]);
    const row = await d.m.db.get<{ key_fingerprint: string }>('SELECT key_fingerprint FROM servers WHERE id = ?', [agent.serverId]);
    assert.equal(row?.key_fingerprint, realKey, 'the server keeps its key');

    // The administrator sees the conflict.
    const { agent: browser } = await loginAgent(d.m.app);
    const page = await browser.get('/servers/new').expect(200);
    assert.match(page.text, new RegExp(`⚠ A server named print-a is in the domain with another key \\(${realKey.replace(/[+/]/g, '\\$&')}\\)`));

    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.2.1'));
    const done = await d.finished((await d.m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkg })).id);
    assert.deepEqual([done.state, done.versionAfter], ['succeeded', '6.2.1']);
    assert.equal(await readlink(path.join(data, 'current')), path.join('releases', '6.2.1'), 'installed on the real server');

    const request = (await pending()).find((r) => r.keyFingerprint === impostor.fingerprint) as RequestJson;
    await api().post(`/api/servers/requests/${request.id}/reject`).set('Authorization', BASIC).expect(200);
    const again = await impostor.enroll(TOKEN);
    assert.deepEqual([again.status, again.body], [403, { error: 'The administrator rejected this server: the administrator rejected this server (' + String((await d.m.services.admission.listRequests('rejected')).find((r) => r.id === request.id)?.decidedAt) + ')' }]);
  });

  it('on a trusted network (--auto-accept) joins under a new name only, never an existing one', async () => {
    const trusted = await createTestMaster(d.pki.root, { enrollToken: TOKEN, autoAccept: true });
    await trusted.services.settings.init({ product: null, productVersion: null, enrollToken: TOKEN });
    const served = await listenMaster(trusted);
    try {
      const first = await new SimulatedAgent(served.url, 'print-t').join(TOKEN);
      assert.ok(first.serverId);
      const other = new SimulatedAgent(served.url, 'print-t');
      const answer = await other.enroll(TOKEN);
      assert.deepEqual([answer.status, (answer.body as { state: string }).state], [202, 'pending']);
      assert.equal((await first.report(undefined)).status, 200);
    } finally {
      await served.close();
      await trusted.cleanup();
    }
  });
});

describe('a reinstalled machine', () => {
  it('gets its server back with a new key only when the administrator accepts it; the old key is refused from then on', async () => {
    const { agent, data } = await acceptedAgent('print-re');
    const oldKey = await readFile(path.join(data, 'agent-key.pem'), 'utf8');
    await agent.stop();
    await rm(data, { recursive: true, force: true });
    const starting = spawn('print-re');
    await waitFor(async () => (await pending()).some((r) => r.name === 'print-re'), 15_000, 'the new key to ask');
    const request = (await pending()).find((r) => r.name === 'print-re') as RequestJson;
    assert.notEqual(request.keyFingerprint, keyFingerprint(oldKey));
    await api().post(`/api/servers/requests/${request.id}/accept`).set('Authorization', BASIC).expect(200);
    const back = await starting.started;
    assert.equal(back.serverId, agent.serverId, 'same server, same history');
    const stolen = new SimulatedAgent(d.master.url, 'print-re');
    Object.assign(stolen, { privateKey: (await import('node:crypto')).createPrivateKey(oldKey), fingerprint: keyFingerprint(oldKey) });
    const challenge = await stolen.call('GET', '/api/agent/challenge');
    const session = await stolen.call('POST', '/api/agent/session', { body: JSON.stringify({ name: 'print-re', keyFingerprint: stolen.fingerprint, challenge: (challenge.body as { challenge: string }).challenge, exchangeKey: newExchange().publicRaw }), prove: true });
    assert.equal(session.status, 401, 'the old key opens nothing');
  });
});

describe('an agent of 0.1 (a shared secret, no key)', () => {
  it('must enroll again with a token, and gets its server back once the administrator accepts its key', async () => {
    // The server as migration 5 left it: accepted, no key.
    const id = await addServerRow(d.m.db, 'print-old');
    await d.m.db.run('UPDATE servers SET public_key = NULL, key_fingerprint = NULL WHERE id = ?', [id]);
    const { data, args } = agentArgs('print-old');
    await mkdir(data, { recursive: true, mode: 0o700 });
    await writeFile(path.join(data, 'identity.json'), JSON.stringify({ serverId: id, secret: 's'.repeat(43), masterPublicKey: (await d.m.services.masterKey()).publicPem, name: 'print-old', masterUrl: d.master.url, enrolledAt: new Date().toISOString() }), { mode: 0o600 });
    const without = await runAgentToExit(args);
    assert.equal(without.code, 2);
    assert.match(without.output, /propagator: this agent enrolled before agents had keys: enroll it again with an enrollment token \(PROPAGATOR_ENROLL_TOKEN or --enroll-token-file\); the administrator accepts its new key in New servers/);
    const starting = spawn('print-old');
    await waitFor(async () => (await pending()).some((r) => r.name === 'print-old'), 15_000, 'its new key to ask');
    const request = (await pending()).find((r) => r.name === 'print-old') as RequestJson;
    await api().post(`/api/servers/requests/${request.id}/accept`).set('Authorization', BASIC).expect(200);
    assert.equal((await starting.started).serverId, id, 'the same server, its history kept');
  });
});

describe('one-time enrollment tokens', () => {
  it('enroll exactly their name, once, accepted at once', async () => {
    const database = d.m.config.database.engine === 'postgres' ? ['--database', d.m.config.database.url] : [];
    const made = await propagator(['token', 'create', '--name', 'print-ot', '--data', d.m.dir, ...database, '--valid-for', '2']);
    assert.equal(made.code, 0, made.stderr);
    const token = made.stdout.trim();
    assert.match(made.stderr, /One-time enrollment token for "print-ot", valid until \S+ \(shown only now\):/);
    const hash = await d.m.db.get<{ token_hash: string }>('SELECT token_hash FROM enroll_tokens WHERE name = ?', ['print-ot']);
    assert.ok(hash && !hash.token_hash.includes(token), 'only its hash is stored');

    const wrongName = new SimulatedAgent(d.master.url, 'print-other');
    const refused = await wrongName.enroll(token);
    assert.deepEqual([refused.status, refused.body], [403, { error: 'This one-time enrollment token enrolls "print-ot", not "print-other"' }]);

    const starting = spawn('print-ot', [], { PROPAGATOR_ENROLL_TOKEN: token });
    const agent = await starting.started;
    assert.match(agent.logs(), /"msg":"enrolled with the master"/);
    const again = await new SimulatedAgent(d.master.url, 'print-ot').enroll(token);
    assert.equal(again.status, 401);
    assert.match((again.body as { error: string }).error, /^This one-time enrollment token was already used \(\S+\); create a new one in the console \(New servers\)$/);

    const { agent: browser, csrf } = await loginAgent(d.m.app);
    const created = await browser.post('/servers/tokens').type('form').send({ _csrf: csrf, name: 'print-console', days: '1' }).expect(200);
    assert.match(created.text, /One-time token for <strong>print-console<\/strong> \(shown only now; valid until/);
    const fromConsole = /<code id="one-time-token">([^<]+)<\/code>/.exec(created.text)?.[1] ?? '';
    assert.equal((await new SimulatedAgent(d.master.url, 'print-console').enroll(fromConsole)).status, 201);
    const bad = await browser.post('/servers/tokens').type('form').send({ _csrf: csrf, name: '../etc', days: '1' }).expect(422);
    assert.match(bad.text, /The server name must be 1 to 64 of A-Z a-z 0-9 \. _ -/);

    const viaApi = await api().post('/api/enroll-tokens').set('Authorization', BASIC).send({ name: 'print-api', validForHours: 0.0001 }).expect(201);
    await new Promise((r) => setTimeout(r, 600));
    const expired = await new SimulatedAgent(d.master.url, 'print-api').enroll(viaApi.body.token as string);
    assert.match((expired.body as { error: string }).error, /^This one-time enrollment token expired on \S+; create a new one in the console \(New servers\)$/);

    const noDb = await propagator(['token', 'create', '--name', 'x', '--data', path.join(d.work, 'nowhere')]);
    assert.deepEqual([noDb.code, noDb.stderr.trim()], [2, `propagator: no master database in ${path.join(d.work, 'nowhere')} (give the master's data folder with --data, or its --database)`]);
    const noName = await propagator(['token', 'create', '--data', d.m.dir]);
    assert.equal(noName.code, 2);
    assert.match(noName.stderr, /missing --name/);
  });
});

describe('the agent command line', () => {
  it('refuses a token on the command line, and a master whose key is not the pinned one', async () => {
    const flag = await runAgentToExit([...agentArgs('print-flag').args, '--enroll-token', TOKEN]);
    assert.equal(flag.code, 2);
    assert.match(flag.output, /propagator: --enroll-token would show the token to every user of this machine \(ps, \/proc\): put it in a file \(--enroll-token-file FILE, owner-only\) or in PROPAGATOR_ENROLL_TOKEN/);
    const masterKey = keyFingerprint((await d.m.services.masterKey()).publicPem);
    const wrongPin = `SHA256:${'A'.repeat(43)}`;
    const pinned = await runAgentToExit([...agentArgs('print-pin', ['--master-fingerprint', wrongPin]).args], { PROPAGATOR_ENROLL_TOKEN: TOKEN });
    assert.equal(pinned.code, 2);
    assert.match(pinned.output, new RegExp(`the master's key ${masterKey.replace(/[+/]/g, '\\$&')} is not the one given with --master-fingerprint \\(${wrongPin}\\): is this the right master\\?`));
    const right = spawn('print-pin-ok', ['--master-fingerprint', masterKey]);
    await waitFor(async () => right.logs().includes('waiting for the administrator'), 15_000, 'a pinned agent to enroll');
    right.child.kill('SIGKILL');
  });
});

describe('an agent claiming another mode or address', () => {
  it('never makes the master call out until the administrator accepts it, and the master never follows a redirect', async () => {
    const hits: string[] = [];
    const canary = http.createServer((req, res) => {
      hits.push(`${req.method} ${req.url}`);
      req.resume();
      res.writeHead(202, { 'content-type': 'application/json' }).end('{}');
    });
    const redirector = http.createServer((req, res) => {
      req.resume();
      res.writeHead(307, { location: `${canaryUrl}/stolen` }).end();
    });
    await new Promise<void>((r) => canary.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => redirector.listen(0, '127.0.0.1', r));
    const canaryUrl = `http://127.0.0.1:${(canary.address() as AddressInfo).port}`;
    const redirectUrl = `http://127.0.0.1:${(redirector.address() as AddressInfo).port}`;
    try {
      const sneaky = new SimulatedAgent(d.master.url, 'print-ssrf');
      assert.equal((await sneaky.enroll(TOKEN)).status, 202);
      const request = (await pending()).find((r) => r.name === 'print-ssrf') as RequestJson;
      await api().post(`/api/servers/requests/${request.id}/accept`).set('Authorization', BASIC).expect(200);
      await sneaky.openSession();

      for (const [address, message] of [
        ['x'.repeat(600), 'The address must be at most 512 characters'],
        ['file:///etc/passwd', 'The address must be an http:// or https:// URL without user name or password'],
        ['http://admin:secret@127.0.0.1/', 'The address must be an http:// or https:// URL without user name or password'],
      ] as const) {
        const res = await sneaky.report({ status: sneaky.status({ mode: 'bidirectional', address }), results: [] });
        assert.deepEqual([res.status, res.body], [422, { error: message }]);
      }
      const megabyte = await sneaky.report({ status: sneaky.status({ mode: 'bidirectional', address: `http://x/${'a'.repeat(1024 * 1024)}` }), results: [] });
      assert.deepEqual([megabyte.status, megabyte.body], [413, { error: 'The request body is too large' }]);

      const claim = await sneaky.report({ status: sneaky.status({ mode: 'bidirectional', address: canaryUrl }), results: [] });
      assert.equal(claim.status, 200);
      const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.4.0'));
      const command = await d.m.services.commands.enqueue({ serverId: sneaky.serverId as number, type: 'propagate', packageId: pkg });
      // The master goes on treating it as the mailbox it was accepted as: the work comes in the answer.
      const answer = await sneaky.report({ status: sneaky.status({ mode: 'bidirectional', address: canaryUrl }), results: [] });
      assert.deepEqual((answer.body as { commands: { id: string }[] }).commands.map((c) => c.id), [command.id]);
      await new Promise((r) => setTimeout(r, 2500));
      assert.deepEqual(hits, [], 'the master never called the claimed address');
      const view = (await api().get('/api/servers').set('Authorization', BASIC)).body.find((s: { name: string }) => s.name === 'print-ssrf');
      assert.deepEqual([view.mode, view.address, view.requestedChange], ['mailbox', null, { mode: 'bidirectional', address: canaryUrl, state: 'pending' }]);
      const { agent: browser } = await loginAgent(d.m.app);
      assert.match((await browser.get('/servers/new').expect(200)).text, new RegExp(`<tr data-server-id="${view.id}">[\\s\\S]*?print-ssrf[\\s\\S]*?bidirectional <span class="mono">${canaryUrl}`));

      // Accepted by the administrator, the address is used.
      await api().post(`/api/servers/${view.id}/change`).set('Authorization', BASIC).send({ accept: true }).expect(204);
      const pushed = await d.m.services.commands.enqueue({ serverId: view.id as number, type: 'propagate', packageId: pkg });
      await waitFor(async () => hits.length > 0, 10_000, 'the accepted address to be called');
      assert.deepEqual(hits, ['POST /api/commands']);
      assert.equal((await d.m.services.commands.get(pushed.id)).state, 'delivered');

      // An address that redirects elsewhere: the master does not follow.
      await sneaky.report({ status: sneaky.status({ mode: 'bidirectional', address: redirectUrl }), results: [] });
      await api().post(`/api/servers/${view.id}/change`).set('Authorization', BASIC).send({ accept: true }).expect(204);
      const redirected = await d.m.services.commands.enqueue({ serverId: view.id as number, type: 'propagate', packageId: pkg });
      await waitFor(async () => (await d.m.services.commands.get(redirected.id)).attempts > 0, 10_000, 'a delivery attempt');
      assert.match((await d.m.services.commands.get(redirected.id)).message, /^cannot reach the agent at http:\/\/127\.0\.0\.1:\d+ \(HTTP 307, not followed\); trying again in \d+ s$/);
      assert.deepEqual(hits, ['POST /api/commands'], 'the redirect target was never called');
      const noChange = await api().post(`/api/servers/${view.id}/change`).set('Authorization', BASIC).send({ accept: true }).expect(404);
      assert.deepEqual(noChange.body, { error: `The server with id ${view.id} asks for no change` });
    } finally {
      canary.close();
      redirector.close();
    }
  });
});

// Last: it fills this address's share of the admission queue.
describe('a holder of the enrollment token flooding the queue', () => {
  it('can queue only 20 requests from one address and 5 under one name, and the administrator rejects them in one go', async () => {
    await api().post('/api/servers/requests/reject').set('Authorization', BASIC).send({ from: '127.0.0.1' }).expect(200);
    const named = await Promise.all(Array.from({ length: 6 }, () => new SimulatedAgent(d.master.url, 'print-same').enroll(TOKEN)));
    assert.deepEqual(named.map((a) => a.status).sort(), [202, 202, 202, 202, 202, 429]);
    assert.deepEqual(named.find((a) => a.status === 429)?.body, { error: '5 enrollments under the name "print-same" already wait for admission: the administrator must accept or reject them first' });
    const many = await Promise.all(Array.from({ length: 20 }, (_, i) => new SimulatedAgent(d.master.url, `flood-${i}`).enroll(TOKEN)));
    assert.equal(many.filter((a) => a.status === 202).length, 15);
    const refused = many.find((a) => a.status === 429);
    assert.match((refused?.body as { error: string }).error, /^20 enrollments from (::ffff:)?127\.0\.0\.1 already wait for admission: the administrator must accept or reject them first$/);
    const { agent: browser, csrf } = await loginAgent(d.m.app);
    const page = await browser.get('/servers/new').expect(200);
    const from = (await pending())[0]?.requestedFrom ?? '';
    assert.match(page.text, /Reject all 20 from here/);
    await browser.post('/servers/requests/reject-from').type('form').send({ _csrf: csrf, from }).expect(303);
    assert.deepEqual(await pending(), []);
    assert.match((await browser.get('/servers/new?done=rejected-from&count=20').expect(200)).text, /20 waiting enrollments were rejected\./);
    // A new server from elsewhere, or once the queue is dealt with, is not held up.
    assert.equal((await new SimulatedAgent(d.master.url, 'print-after').enroll(TOKEN)).status, 202);
  });
});
