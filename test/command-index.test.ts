import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { CommandRunner } from '../agent/command-runner.js';
import { loadAgentKey } from '../agent/identity.js';
import { MasterClient } from '../agent/master-client.js';
import { ReleaseManager } from '../agent/release-manager.js';
import { ReportLoop } from '../agent/report-loop.js';
import { Stager } from '../agent/stager.js';
import type { AgentStatus } from '../lib/agent-protocol.js';
import { memoryLogger } from '../lib/logger.js';
import { BASIC, createTestMaster, listenMaster } from './helpers/master.js';
import { makeRelease } from './helpers/releases.js';
import { tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

const TOKEN = 'index-enrollment-token-0123456789';
let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let m: Awaited<ReturnType<typeof createTestMaster>>;
let served: Awaited<ReturnType<typeof listenMaster>>;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
  m = await createTestMaster(pki.root, { enrollToken: TOKEN, autoAccept: true });
  await m.services.settings.init({ product: null, productVersion: null, enrollToken: TOKEN });
  served = await listenMaster(m);
});
after(async () => {
  await served.close();
  await m.cleanup();
  await cleanup();
});

/**
 * A real agent's parts on one data folder, enrolled with the master on loopback. `start()` makes a
 * runner and its report loop as the agent makes them at each start: calling it again is a restart.
 */
async function agentParts(name: string) {
  const log = memoryLogger();
  const data = path.join(work, name);
  await mkdir(data, { recursive: true });
  const key = await loadAgentKey(data);
  const client = new MasterClient(served.url, null, key, { name, masterFingerprint: null });
  const releases = new ReleaseManager(data, { name, product: 'watchdoc', initialVersion: '6.1.0', hookTimeoutMs: 10_000, keep: 3, maxUnpackRatio: 10 }, log);
  await releases.init();
  const stager = new Stager(data, { name, product: 'watchdoc', trustPath: pki.root, retryMaxDelayMs: 60_000 }, client, log);
  await stager.init();
  const status = async (): Promise<AgentStatus> => ({ name, mode: 'mailbox', address: null, product: 'watchdoc', version: await releases.installedVersion(), staged: [], freeDiskBytes: null });
  const enrolled = await client.enroll(await status(), TOKEN);
  client.setMasterKey(enrolled.masterPublicKey);
  const dir = path.join(data, 'commands');
  const start = async () => {
    const runner = new CommandRunner(dir, { stager, releases, log });
    await runner.init();
    await runner.resume();
    const loop = new ReportLoop({ mode: 'mailbox', pollMinMs: 1000, pollMaxMs: 3000, backoffMaxMs: 20_000, heartbeatMs: 30_000 }, { client, runner, status, log });
    return { runner, loop };
  };
  return { serverId: enrolled.serverId as number, dir, log, start };
}

/** A record as an agent leaves it in DATA/commands: a result, acknowledged by the master or not. */
async function writeRecord(dir: string, reported: boolean, startedAt: Date): Promise<string> {
  const id = randomUUID();
  const at = startedAt.toISOString();
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, `${id}.json`), JSON.stringify({
    command: { id, type: 'propagate', package: { sha256: 'a'.repeat(64), payloadSha256: 'b'.repeat(64), manifestSha256: 'c'.repeat(64), size: 1, product: 'watchdoc', version: '6.2.0', name: 'old' }, allowDowngrade: false },
    result: { commandId: id, state: 'staged', message: 'staged watchdoc 6.2.0', versionBefore: '6.1.0', versionAfter: '6.1.0', startedAt: at, finishedAt: at },
    reported,
  }));
  return id;
}

const reported = async (dir: string, id: string) => (JSON.parse(await readFile(path.join(dir, `${id}.json`), 'utf8')) as { reported: boolean }).reported;

describe('the index of open command records', () => {
  it('reads each record once at start; calls to the master read none; unreported results survive restarts', async () => {
    const a = await agentParts('index-1');
    const hour = Date.now() - 3600_000;
    for (let i = 0; i < 40; i++) await writeRecord(a.dir, true, new Date(hour + i));
    const waiting = [await writeRecord(a.dir, false, new Date(hour + 100)), await writeRecord(a.dir, false, new Date(hour + 101))];

    let { runner, loop } = await a.start();
    assert.equal(runner.fileReads, 42, 'each record read once at start');
    for (let i = 0; i < 5; i++) assert.deepEqual((await runner.outbox()).map((r) => r.commandId), waiting);
    assert.equal(runner.fileReads, 42, 'looking at what to report reads no file');

    // A real command from the master, run and reported by the same calls as the agent's.
    const pkgId = (await supertest(m.app).post('/api/packages').set('Authorization', BASIC).field('name', 'index').attach('package', await makeRelease(work, pki.good.rsa, '6.2.0')).expect(201)).body.id as number;
    const first = await m.services.commands.enqueue({ serverId: a.serverId, type: 'propagate', packageId: pkgId });
    await loop.once();
    await runner.idle();
    await loop.once();
    assert.equal((await m.services.commands.get(first.id)).state, 'succeeded');
    assert.deepEqual(await runner.outbox(), []);
    for (const id of [...waiting, first.id]) assert.equal(await reported(a.dir, id), true, `${id} acknowledged on disk`);
    assert.equal(runner.fileReads, 43, 'only the new command\'s own look-up (it had no record)');
    for (let i = 0; i < 5; i++) await loop.once();
    assert.equal(runner.fileReads, 43, 'idle calls read nothing');

    // A result the agent could not send before it stopped is sent after the restart.
    const second = await m.services.commands.enqueue({ serverId: a.serverId, type: 'propagate', packageId: pkgId });
    await loop.once();
    await runner.idle();
    assert.equal(await reported(a.dir, second.id), false);
    ({ runner, loop } = await a.start());
    assert.equal(runner.fileReads, 44);
    assert.deepEqual((await runner.outbox()).map((r) => [r.commandId, r.state]), [[second.id, 'staged']]);
    await loop.once();
    assert.equal((await m.services.commands.get(second.id)).state, 'succeeded');
    assert.deepEqual(await runner.outbox(), []);

    // And an acknowledged one is not sent again after another restart.
    ({ runner } = await a.start());
    assert.deepEqual(await runner.outbox(), []);
    assert.deepEqual((await readdir(a.dir)).filter((f) => f.endsWith('.json')).length, 44);
  });

  it('sends a long backlog in reports the master accepts, oldest first', async () => {
    const a = await agentParts('index-backlog');
    const start = Date.now() - 24 * 3600_000;
    const ids: string[] = [];
    // More than the 1,000 results a report may carry: sent all at once, the master refuses them all.
    for (let i = 0; i < 1200; i++) ids.push(await writeRecord(a.dir, false, new Date(start + i * 1000)));
    const { runner, loop } = await a.start();
    await loop.once();
    assert.deepEqual([await reported(a.dir, ids[99] as string), await reported(a.dir, ids[100] as string)], [true, false], 'the oldest 100 went first');
    for (let call = 1; call < 12; call++) await loop.once();
    assert.equal(a.log.lines.filter((l) => l.includes('cannot reach the master')).join('\n'), '');
    assert.deepEqual(await runner.outbox(), []);
  });

  it('starts with a damaged record, says which, and reports the others', async () => {
    const a = await agentParts('index-damaged');
    const waiting = await writeRecord(a.dir, false, new Date());
    const damaged = path.join(a.dir, `${randomUUID()}.json`);
    await writeFile(damaged, '{"command": {"id": "cut sh');
    const { runner } = await a.start();
    assert.deepEqual((await runner.outbox()).map((r) => r.commandId), [waiting]);
    const line = a.log.lines.find((l) => l.includes('"msg":"a command record is damaged; ignored"'));
    assert.match(line ?? '', new RegExp(`"file":"${damaged}","error":"Unterminated string in JSON at position 26"`));
    assert.equal(await readFile(damaged, 'utf8'), '{"command": {"id": "cut sh', 'left for a person to look at');
  });

  it('removes acknowledged records a week after the acknowledgement, without reading them', async () => {
    const a = await agentParts('index-prune');
    const day = 24 * 3600_000;
    const finished = new Date(Date.now() - 2 * day);
    const old = await writeRecord(a.dir, true, finished);
    const recent = await writeRecord(a.dir, true, finished);
    const unreported = await writeRecord(a.dir, false, finished);
    // The file's age is the acknowledgement's: the last write of a record sets it.
    const eightDaysAgo = new Date(Date.now() - 8 * day);
    await utimes(path.join(a.dir, `${old}.json`), eightDaysAgo, eightDaysAgo);
    await utimes(path.join(a.dir, `${unreported}.json`), eightDaysAgo, eightDaysAgo);
    const { runner } = await a.start();
    const reads = runner.fileReads;
    assert.equal(await runner.pruneByAge(), 1);
    assert.deepEqual((await readdir(a.dir)).sort(), [`${recent}.json`, `${unreported}.json`].sort());
    assert.equal(runner.fileReads, reads, 'no record was read');
    assert.deepEqual((await runner.outbox()).map((r) => r.commandId), [unreported]);
    assert.ok(a.log.lines.some((l) => l.includes('"msg":"old command records removed"') && l.includes('"removed":1')));
  });
});
