import assert from 'node:assert/strict';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { fillDisk, mountExt4, mountTmpfs, tryRun, unmount } from './helpers/disks.js';
import { ADMIN_PASSWORD, BASIC } from './helpers/master.js';
import { startMasterProcess, waitFor, type MasterProcess } from './helpers/master-process.js';
import { makePackage } from './helpers/openssl-package.js';
import { tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let packageFile: string;
// What a test that fails half-way leaves is undone here: a frozen disk first (its processes
// cannot even die before), then the masters, then the mounts.
const frozen = new Set<string>();
const running = new Set<MasterProcess>();
const mounted = new Set<string>();

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
  packageFile = await makePackage(work, 'small', { publisher: pki.good.rsa, payloadDir: path.join(pki.dir, 'ca') });
});
after(async () => {
  for (const dir of frozen) await tryRun('fsfreeze', ['-u', dir]);
  await Promise.all([...running].map((m) => m.stop('SIGKILL')));
  for (const dir of mounted) await unmount(dir).catch(() => undefined);
  await cleanup();
});

async function startMaster(data: string): Promise<MasterProcess> {
  const master = await startMasterProcess(['--data', data, '--trust', pki.root], { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD });
  running.add(master);
  return master;
}

async function stopMaster(master: MasterProcess): Promise<void> {
  await master.stop('SIGKILL');
  running.delete(master);
}

async function health(master: MasterProcess): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${master.url}/health`);
  return { status: res.status, body: await res.json() };
}

/** /health answers from a result up to 2 s old: calls spread over 4 s see at least two fresh checks. */
async function healthFourSeconds(master: MasterProcess): Promise<{ status: number; body: unknown }[]> {
  const answers = [];
  for (let i = 0; i < 8; i++) {
    answers.push(await health(master));
    await new Promise((r) => setTimeout(r, 500));
  }
  return answers;
}

/** Threads of a process asleep in the kernel uninterruptibly (state D): waiting on a disk. */
async function blockedThreads(pid: number): Promise<number> {
  const tasks = await readdir(`/proc/${pid}/task`);
  const states = await Promise.all(tasks.map((t) => readFile(`/proc/${pid}/task/${t}/stat`, 'utf8').then((s) => s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3), () => '')));
  return states.filter((s) => s === 'D').length;
}

const countLines = (text: string, pattern: RegExp) => text.split('\n').filter((l) => pattern.test(l)).length;
const DOWN = /"level":"error","msg":"the master cannot write to its disk: \/health answers 503"/;
const UP = /"level":"info","msg":"the master can write to its disk again: \/health answers 200"/;
const OK = { status: 'ok', database: true, store: true };

async function upload(url: string, name: string): Promise<{ status: number; body: unknown }> {
  const form = new FormData();
  form.set('name', name);
  form.set('package', new Blob([await readFile(packageFile)]), 'package.pkg');
  const res = await fetch(`${url}/api/packages`, { method: 'POST', headers: { authorization: BASIC }, body: form });
  return { status: res.status, body: await res.json() };
}

describe('/health of a real master process proves its disk takes writes', () => {
  it('answers 503 with the reason while the disk is full, logs it once, and 200 again once space is freed', { timeout: 90_000 }, async (t: TestContext) => {
    const data = path.join(work, 'full');
    const skip = await mountTmpfs(data, '8m');
    if (skip) {
      t.skip(skip);
      return;
    }
    mounted.add(data);
    const master = await startMaster(data);
    assert.deepEqual(await health(master), { status: 200, body: OK });

    const filler = await fillDisk(data);
    await waitFor(async () => (await health(master)).status === 503, 10_000, '/health to see the full disk');
    const full = {
      status: 503,
      body: { status: 'unavailable', database: false, store: false, reason: 'the master\'s disk is full (SQLITE_FULL, ENOSPC): the database and the package store cannot be written' },
    };
    for (const answer of await healthFourSeconds(master)) assert.deepEqual(answer, full);
    assert.equal(countLines(master.stdout(), DOWN), 1, master.stdout());
    assert.match(master.stdout(), /"reason":"the master's disk is full \(SQLITE_FULL, ENOSPC\): the database and the package store cannot be written","database":false,"store":false\}/);

    await rm(filler);
    await waitFor(async () => (await health(master)).status === 200, 10_000, '/health to see the disk writable again');
    for (const answer of await healthFourSeconds(master)) assert.deepEqual(answer, { status: 200, body: OK });
    assert.equal(countLines(master.stdout(), DOWN), 1);
    assert.equal(countLines(master.stdout(), UP), 1, master.stdout());
    // No probe file is left behind, full disk or not.
    assert.deepEqual(await readdir(path.join(data, 'tmp')), []);
    const after = await upload(master.url, 'After the full disk');
    assert.equal(after.status, 201, JSON.stringify(after.body));
    await stopMaster(master);
  });

  it('answers 503 while a write hangs (a frozen disk), without piling up writes, and 200 once it moves again', { timeout: 90_000 }, async (t: TestContext) => {
    const data = path.join(work, 'frozen');
    const ext4 = await mountExt4(path.join(work, 'frozen.img'), data, 32);
    if (typeof ext4 === 'string') {
      t.skip(ext4);
      return;
    }
    mounted.add(data);
    const master = await startMaster(data);
    assert.deepEqual(await health(master), { status: 200, body: OK });
    await new Promise((r) => setTimeout(r, 2_100));

    const freeze = await tryRun('fsfreeze', ['-f', data]);
    if (freeze.code !== 0) {
      await stopMaster(master);
      t.skip(`cannot freeze the file system (fsfreeze, Debian package util-linux): ${freeze.output}`);
      return;
    }
    frozen.add(data);
    // Every answer comes within the probe's 5 s bound, though nothing reaches the disk.
    const started = Date.now();
    const hung = await health(master);
    assert.ok(Date.now() - started < 8_000, `/health took ${Date.now() - started} ms on a frozen disk`);
    assert.deepEqual(hung, {
      status: 503,
      body: { status: 'unavailable', database: false, store: false, reason: 'the master\'s disk did not complete a write within 5 s: the database and the package store cannot be written' },
    });
    for (const answer of await healthFourSeconds(master)) assert.equal(answer.status, 503);
    assert.equal(countLines(master.stdout(), DOWN), 1, master.stdout());
    // One database write and one store write wait on the disk, however many checks came since.
    const blocked = await blockedThreads(master.child.pid as number);
    assert.ok(blocked <= 2, `${blocked} threads of the master wait on the frozen disk`);

    await tryRun('fsfreeze', ['-u', data]);
    frozen.delete(data);
    await waitFor(async () => (await health(master)).status === 200, 15_000, '/health to see the disk move again');
    assert.equal(countLines(master.stdout(), UP), 1, master.stdout());
    assert.deepEqual(await readdir(path.join(data, 'tmp')), []);
    await stopMaster(master);
    await unmount(data);
    mounted.delete(data);
  });

  it('answers 503 once the kernel turns the disk read-only under the master, and refuses uploads with the reason', { timeout: 90_000 }, async (t: TestContext) => {
    // A tmpfs cannot be remounted read-only while the master holds its database open for
    // writing (EBUSY): an ext4 image does it as a failing disk does, by errors=remount-ro.
    const data = path.join(work, 'read-only');
    const ext4 = await mountExt4(path.join(work, 'read-only.img'), data, 32);
    if (typeof ext4 === 'string') {
      t.skip(ext4);
      return;
    }
    mounted.add(data);
    const master = await startMaster(data);
    assert.deepEqual(await health(master), { status: 200, body: OK });

    await writeFile(ext4.errorTrigger, 'propagator test: a failing disk\n');
    assert.match((await tryRun('findmnt', ['-n', '-o', 'OPTIONS', data])).output, /emergency_ro|(^|,)ro(,|$)/);
    await waitFor(async () => (await health(master)).status === 503, 10_000, '/health to see the read-only disk');
    const readOnly = {
      status: 503,
      body: { status: 'unavailable', database: false, store: false, reason: 'the master\'s disk is read-only (SQLITE_IOERR, EROFS): the database and the package store cannot be written' },
    };
    for (const answer of await healthFourSeconds(master)) assert.deepEqual(answer, readOnly);
    assert.equal(countLines(master.stdout(), DOWN), 1, master.stdout());

    // Before: 400 "The upload form is malformed (EROFS: read-only file system, open '…')".
    const refused = await upload(master.url, 'On a read-only disk');
    assert.deepEqual(refused, {
      status: 503,
      body: { error: 'The master\'s disk is read-only (EROFS): nothing was saved. Check the disk of the master\'s data folder (a file system turns read-only after errors), then try again' },
    });
    assert.match(master.stdout(), /"level":"error","msg":"request failed","method":"POST","path":"\/api\/packages","status":503,"error":"The master's disk is read-only \(EROFS\): nothing was saved\.[^"]*","code":"EROFS"\}/);
    assert.deepEqual(await readdir(path.join(data, 'tmp')), []);
    assert.deepEqual(await readdir(path.join(data, 'packages')), []);
    // Reads still work: the console shows what the master has.
    const list = await fetch(`${master.url}/api/packages`, { headers: { authorization: BASIC } });
    assert.equal(list.status, 200);
    assert.deepEqual(await list.json(), []);
    await stopMaster(master);
    // The kernel keeps this file system read-only until it is mounted again (after a fsck).
    await unmount(data);
    mounted.delete(data);
  });
});
