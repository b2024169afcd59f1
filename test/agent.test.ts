import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { access, copyFile, readdir, readFile, readlink, rename, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { runAgentToExit, startAgentProcess, type AgentProcess } from './helpers/agent-process.js';
import { openTestDomain, type TestDomain } from './helpers/domain.js';
import { BASIC } from './helpers/master.js';
import { waitFor } from './helpers/master-process.js';
import { SimulatedAgent } from './helpers/simulated-agent.js';
import { makeRelease } from './helpers/releases.js';
import { keyFingerprint } from '../lib/agent-keys.js';
import { flipPayloadByte } from './helpers/tamper.js';
import type { TestPki } from './helpers/test-pki.js';

const TOKEN = 'test-enrollment-token-0123456789';

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

const exists = (p: string) => access(p).then(() => true, () => false);

function agentArgs(name: string, mode: 'mailbox' | 'bidirectional', extra: string[] = []): { args: string[]; data: string } {
  const data = path.join(work, `agent-${name}`);
  const args = ['--master', master.url, '--name', name, '--mode', mode, '--data', data, '--trust', pki.root, '--initial-version', '6.1.0',
    '--poll-min', '0.2', '--poll-max', '1', '--heartbeat', '1', ...(mode === 'bidirectional' ? ['--host', '127.0.0.1', '--port', '0'] : []), ...extra];
  return { args, data };
}

async function startAgent(name: string, mode: 'mailbox' | 'bidirectional', extra: string[] = [], token: string | null = TOKEN) {
  const { args, data } = agentArgs(name, mode, extra);
  const agent = await startAgentProcess(args, token ? { PROPAGATOR_ENROLL_TOKEN: token } : {});
  agents.push(agent);
  return { agent, data };
}

async function serverView(id: number) {
  const res = await supertest(m.app).get('/api/servers').set('Authorization', BASIC).expect(200);
  return (res.body as { id: number; version: string; mode: string; status: string; address: string | null; staged: { version: string }[] }[]).find((s) => s.id === id);
}

describe('enrollment', () => {
  it('enrolls with the token and its own key, keeps both owner-only, and reuses them without the token', async () => {
    const { agent, data } = await startAgent('enroll-1', 'mailbox');
    const view = await serverView(agent.serverId);
    assert.deepEqual([view?.mode, view?.version, view?.status, view?.address], ['mailbox', '6.1.0', 'online', null]);
    assert.equal((await stat(data)).mode & 0o777, 0o700);
    assert.equal((await stat(path.join(data, 'identity.json'))).mode & 0o777, 0o600);
    assert.equal((await stat(path.join(data, 'agent-key.pem'))).mode & 0o777, 0o600);
    const keyPem = await readFile(path.join(data, 'agent-key.pem'), 'utf8');
    const publicPem = createPublicKey(keyPem).export({ type: 'spki', format: 'pem' }).toString();
    const identity = JSON.parse(await readFile(path.join(data, 'identity.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(identity.keyFingerprint, keyFingerprint(publicPem));
    assert.ok(!JSON.stringify(identity).includes('PRIVATE KEY') && !('secret' in identity), 'identity.json holds no secret');
    const row = await m.db.get<{ public_key: string; key_fingerprint: string }>('SELECT public_key, key_fingerprint FROM servers WHERE id = ?', [agent.serverId]);
    assert.deepEqual([row?.public_key, row?.key_fingerprint], [publicPem, identity.keyFingerprint], 'the master keeps the public key, nothing secret');
    const created = agent.logs().split('\n').find((l) => l.includes('"msg":"agent key created"')) ?? '';
    assert.ok(created.includes(`"keyFingerprint":"${String(identity.keyFingerprint)}"`), 'the log shows the fingerprint the administrator compares');
    await agent.stop();
    const again = await startAgent('enroll-1', 'mailbox', [], null);
    assert.equal(again.agent.serverId, agent.serverId);
  });

  it('refuses a wrong enrollment token, and an agent without a token', async () => {
    const wrong = await runAgentToExit(agentArgs('enroll-wrong', 'mailbox').args, { PROPAGATOR_ENROLL_TOKEN: 'not-the-token-0123456789' });
    assert.equal(wrong.code, 2);
    assert.match(wrong.output, /propagator: the master refused the enrollment: The enrollment token is wrong/);
    const none = await runAgentToExit(agentArgs('enroll-none', 'mailbox').args);
    assert.equal(none.code, 2);
    assert.match(none.output, /this agent is not enrolled yet: start it once with an enrollment token \(PROPAGATOR_ENROLL_TOKEN, or --enroll-token-file FILE\)/);
  });

  it('is refused, and says so, once removed from the console', async () => {
    const { agent } = await startAgent('enroll-removed', 'mailbox');
    await supertest(m.app).delete(`/api/servers/${agent.serverId}`).set('Authorization', BASIC).expect(204);
    await waitFor(async () => agent.logs().includes('the master refused this agent'), 10_000, 'the refusal in the log');
    assert.match(agent.logs(), /"reason":"This agent is not a server of the domain: it was removed from the console, or \\"enroll-removed\\" was accepted with another key; enroll it again with an enrollment token"/);
    await agent.stop();
  });
});

describe('mailbox mode', () => {
  let agent: AgentProcess;
  let data: string;
  before(async () => {
    ({ agent, data } = await startAgent('mail-1', 'mailbox'));
  });

  it('propagates (stages) then applies a package, running its hooks', async () => {
    const pkgId = await upload(await makeRelease(work, pki.good.rsa, '6.2.0'));
    const staged = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'propagate', packageId: pkgId })).id);
    assert.deepEqual([staged.state, staged.message, staged.versionAfter], ['succeeded', 'staged watchdoc 6.2.0', '6.1.0']);
    await waitFor(async () => (await serverView(agent.serverId))?.staged.some((s) => s.version === '6.2.0') ?? false, 5000, 'staged list');
    const applied = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkgId })).id);
    assert.deepEqual([applied.state, applied.message, applied.versionBefore, applied.versionAfter], ['succeeded', 'installed watchdoc 6.2.0', '6.1.0', '6.2.0']);
    assert.equal(await readlink(path.join(data, 'current')), path.join('releases', '6.2.0'));
    assert.equal(await readFile(path.join(data, 'current', 'watchdoc.conf'), 'utf8'), 'version=6.2.0\n');
    const hooks = await readFile(path.join(data, 'hook-log.txt'), 'utf8');
    const dir = path.join(data, 'releases', '6.2.0');
    assert.equal(hooks, `${dir}/hooks/apply product=watchdoc version=6.2.0 previous=6.1.0 dir=${dir}\n${dir}/hooks/health product=watchdoc version=6.2.0 previous=6.1.0 dir=${dir}\n`);
    await waitFor(async () => (await serverView(agent.serverId))?.version === '6.2.0', 5000, 'the reported version');
  });

  it('executes a command delivered twice only once, and reports its result again', async () => {
    const pkgId = await upload(await makeRelease(work, pki.good.rsa, '6.2.1'));
    const command = await m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkgId });
    await finished(command.id);
    const runs = (await readFile(path.join(data, 'hook-log.txt'), 'utf8')).split('\n').filter((l) => l.includes('apply') && l.includes('6.2.1')).length;
    await m.db.run("UPDATE commands SET state = 'queued', message = 'redelivered' WHERE id = ?", [command.id]);
    m.services.agents.markWork([agent.serverId]);
    const again = await finished(command.id);
    assert.deepEqual([again.state, again.message], ['succeeded', 'installed watchdoc 6.2.1']);
    const after = (await readFile(path.join(data, 'hook-log.txt'), 'utf8')).split('\n').filter((l) => l.includes('apply') && l.includes('6.2.1')).length;
    assert.equal(after, runs, 'the hook did not run a second time');
  });

  it('refuses a downgrade unless the command allows it', async () => {
    const pkgId = await upload(await makeRelease(work, pki.good.rsa, '6.0.0'));
    const refused = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkgId })).id);
    assert.deepEqual([refused.state, refused.message], ['failed', 'this package (6.0.0) is older than the installed version (6.2.1); only an explicit rollback may downgrade']);
    const rollback = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkgId, allowDowngrade: true })).id);
    assert.deepEqual([rollback.state, rollback.versionAfter], ['succeeded', '6.0.0']);
    const same = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkgId })).id);
    assert.deepEqual([same.state, same.message], ['succeeded', 'watchdoc 6.0.0 is already installed']);
  });

  it('rolls back a release whose health check fails', async () => {
    const pkgId = await upload(await makeRelease(work, pki.good.rsa, '6.3.0', { health: 'echo "spooler did not start" >&2; exit 1' }));
    const result = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkgId })).id);
    assert.equal(result.state, 'failed');
    assert.equal(result.message, 'hooks/health failed (exit 1): spooler did not start; rolled back to 6.0.0');
    assert.equal(result.versionAfter, '6.0.0');
    assert.equal(await readlink(path.join(data, 'current')), path.join('releases', '6.0.0'));
    assert.equal(await exists(path.join(data, 'releases', '6.3.0')), false);
  });

  it('reports a failing hooks/apply with its output, and keeps the release', async () => {
    const pkgId = await upload(await makeRelease(work, pki.good.rsa, '6.3.1', { apply: 'echo "disk full" >&2; exit 3' }));
    const result = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkgId })).id);
    assert.deepEqual([result.state, result.message], ['failed', 'hooks/apply failed (exit 3): disk full; 6.0.0 is still installed']);
    assert.equal(await readlink(path.join(data, 'current')), path.join('releases', '6.0.0'));
  });

  it('refuses a package altered on the master', async () => {
    const pkgId = await upload(await makeRelease(work, pki.good.rsa, '6.4.0'));
    const stored = await m.services.packages.get(pkgId);
    await flipPayloadByte(m.store.pathFor(stored.sha256));
    const result = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkgId })).id);
    assert.deepEqual([result.state, result.message], ['failed', 'This update package is corrupt: payload checksum does not match the manifest']);
    assert.equal((await serverView(agent.serverId))?.version, '6.0.0');
  });

  it('refuses another validly signed package served in place of the announced one', async () => {
    const announced = await upload(await makeRelease(work, pki.good.rsa, '6.4.5'));
    const other = await makeRelease(work, pki.good.rsa, '6.4.6');
    const stored = await m.services.packages.get(announced);
    await copyFile(other, m.store.pathFor(stored.sha256));
    const sameSize = (await stat(other)).size === stored.size;
    const result = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: announced })).id);
    assert.equal(result.state, 'failed');
    assert.match(result.message, sameSize
      ? /^the package the master served is not the one it announced \(another manifest\)$/
      : /^the package the master served is not the one it announced \(\d+ bytes instead of \d+\)$/);
    assert.equal((await serverView(agent.serverId))?.version, '6.0.0');
  });

  it('refuses a package for another product, or one its version is too old for', async () => {
    const other = await upload(await makeRelease(work, pki.good.rsa, '1.0.0', { product: 'printgate' }));
    const r1 = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'propagate', packageId: other })).id);
    assert.deepEqual([r1.state, r1.message], ['failed', 'this package is for printgate; this server runs watchdoc']);
    const needsNewer = await upload(await makeRelease(work, pki.good.rsa, '7.0.0', { minVersion: '6.5' }));
    const r2 = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'propagate', packageId: needsNewer })).id);
    assert.deepEqual([r2.state, r2.message], ['failed', 'this package needs watchdoc 6.5 or newer; this server runs 6.0.0']);
  });

  it('downloads only packages assigned to it', async () => {
    const pkgId = await upload(await makeRelease(work, pki.good.rsa, '6.9.0'));
    const stored = await m.services.packages.get(pkgId);
    const other = await new SimulatedAgent(master.url, 'not-assigned').join(TOKEN);
    const res = await supertest(m.app).get(`/api/agent/packages/${stored.sha256}`).set(other.sessionHeaders('GET', `/api/agent/packages/${stored.sha256}`)).expect(403);
    assert.deepEqual(res.body, { error: 'This package is not assigned to this server' });
    await supertest(m.app).get(`/api/agent/packages/${stored.sha256}`).set('Authorization', BASIC).expect(401);
  });

  it('serves an assigned package whole or from a byte range, and says why it cannot', async () => {
    const file = await makeRelease(work, pki.good.rsa, '6.9.1', { padding: 3 * 1024 * 1024 });
    const bytes = await readFile(file);
    const pkgId = await upload(file);
    const { sha256 } = await m.services.packages.get(pkgId);
    const reader = await new SimulatedAgent(master.url, 'range-reader').join(TOKEN, { version: '6.0.0' });
    await m.services.commands.enqueue({ serverId: reader.serverId as number, type: 'propagate', packageId: pkgId });
    const get = (range?: string) => {
      const req = supertest(m.app).get(`/api/agent/packages/${sha256}`).set(reader.sessionHeaders('GET', `/api/agent/packages/${sha256}`)).buffer(true).parse((res, done) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => done(null, Buffer.concat(chunks)));
      });
      return range ? req.set('Range', range) : req;
    };

    const whole = await get().expect(200);
    assert.equal(whole.headers['content-length'], String(bytes.length));
    assert.equal(whole.headers['accept-ranges'], 'bytes');
    assert.ok((whole.body as Buffer).equals(bytes));

    const from = 1_234_567;
    const rest = await get(`bytes=${from}-`).expect(206);
    assert.equal(rest.headers['content-range'], `bytes ${from}-${bytes.length - 1}/${bytes.length}`);
    assert.ok((rest.body as Buffer).equals(bytes.subarray(from)));

    const middle = await get('bytes=10-19').expect(206);
    assert.ok((middle.body as Buffer).equals(bytes.subarray(10, 20)));

    const beyond = await get(`bytes=${bytes.length + 10}-`).expect(416);
    assert.equal(beyond.headers['content-range'], `bytes */${bytes.length}`);
    assert.deepEqual(JSON.parse((beyond.body as Buffer).toString()), { error: `The range asked for is outside the package (${bytes.length} bytes)` });

    // Several ranges at once are not something an agent asks for: the whole file answers them.
    assert.equal((await get('bytes=0-9,20-29').expect(200)).headers['content-length'], String(bytes.length));

    await rename(m.store.pathFor(sha256), `${m.store.pathFor(sha256)}.away`);
    try {
      const missing = await get().expect(404);
      assert.deepEqual(JSON.parse((missing.body as Buffer).toString()), { error: 'The package file is missing from the master\'s store' });
    } finally {
      await rename(`${m.store.pathFor(sha256)}.away`, m.store.pathFor(sha256));
    }
  });
});

describe('release housekeeping', () => {
  it('keeps the last 3 releases', async () => {
    const { agent, data } = await startAgent('keep-3', 'mailbox');
    for (const version of ['7.1', '7.2', '7.3', '7.4']) {
      const pkgId = await upload(await makeRelease(work, pki.good.rsa, version));
      const done = await finished((await m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId: pkgId })).id);
      assert.equal(done.state, 'succeeded', done.message);
    }
    assert.deepEqual((await readdir(path.join(data, 'releases'))).sort(), ['7.2', '7.3', '7.4']);
    assert.equal(await readlink(path.join(data, 'current')), path.join('releases', '7.4'));
    assert.deepEqual((await readdir(path.join(data, 'staging'))), [], 'installed packages leave the staging folder');
    const view = await serverView(agent.serverId);
    assert.ok(view && typeof (view as unknown as { freeDiskBytes: number }).freeDiskBytes === 'number' && (view as unknown as { freeDiskBytes: number }).freeDiskBytes > 0);
  });
});

describe('packages in use', () => {
  it('refuses to delete a package that unfinished work for a slave uses', async () => {
    const { agent } = await startAgent('in-use', 'mailbox');
    await agent.stop();
    const pkgId = await upload(await makeRelease(work, pki.good.rsa, '8.0'));
    const command = await m.services.commands.enqueue({ serverId: agent.serverId, type: 'propagate', packageId: pkgId });
    const refused = await supertest(m.app).delete(`/api/packages/${pkgId}`).set('Authorization', BASIC).expect(409);
    assert.match(refused.body.error, /^The update "pkg \d+" is used by an operation in progress; cancel it or wait until it ends$/);
    await m.db.run("UPDATE commands SET state = 'failed' WHERE id = ?", [command.id]);
    await supertest(m.app).delete(`/api/packages/${pkgId}`).set('Authorization', BASIC).expect(204);
    assert.equal((await m.services.commands.get(command.id)).packageId, null, 'the history keeps the command, without the package');
  });
});
