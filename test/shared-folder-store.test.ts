import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { openAsBlob } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ADMIN_PASSWORD, BASIC } from './helpers/master.js';
import { startMasterProcess, type MasterProcess } from './helpers/master-process.js';
import { makePackage } from './helpers/openssl-package.js';
import { tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

const env = { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD };

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
/** On tmpfs (/dev/shm) while the data folders are on /tmp's disk: commits copy across file systems. */
let shared: string;
let file: string;
const masters: MasterProcess[] = [];

before(async () => {
  ({ dir: work, cleanup } = await tempDir('propagator-shared-'));
  shared = await mkdtemp('/dev/shm/propagator-shared-store-');
  pki = await createTestPki(path.join(work, 'pki'));
  const payload = path.join(work, 'payload');
  await mkdir(payload);
  await writeFile(path.join(payload, 'watchdoc.conf'), 'release\n');
  file = await makePackage(work, 'shared', { publisher: pki.good.rsa, payloadDir: payload, version: '6.2.0' });
});
after(async () => {
  for (const m of masters) await m.stop('SIGKILL');
  await rm(shared, { recursive: true, force: true });
  await cleanup();
});

async function start(name: string): Promise<MasterProcess> {
  const master = await startMasterProcess(['--data', path.join(work, name), '--trust', pki.root, '--store', shared], env);
  masters.push(master);
  return master;
}

async function upload(master: MasterProcess, name: string): Promise<{ status: number; body: { id: number; sha256: string } }> {
  const form = new FormData();
  form.set('name', name);
  form.set('package', await openAsBlob(file), 'shared.pkg');
  const res = await fetch(`${master.url}/api/packages`, { method: 'POST', headers: { authorization: BASIC }, body: form });
  return { status: res.status, body: await res.json() as { id: number; sha256: string } };
}

const age = async (file: string, seconds: number) => {
  const then = new Date(Date.now() - seconds * 1000);
  await utimes(file, then, then);
};

describe('a package folder several masters share (--store FOLDER)', () => {
  it('is on another file system than the data folders here', async () => {
    assert.notEqual((await stat(shared)).dev, (await stat(work)).dev, 'the copy across file systems would not be exercised');
  });

  it('holds a package two masters add once, copied whole across file systems, and is probed by /health', async () => {
    const [a, b] = [await start('a'), await start('b')];
    const first = await upload(a, 'On A');
    const second = await upload(b, 'On B');
    assert.deepEqual([first.status, second.status, first.body.sha256], [201, 201, second.body.sha256]);
    assert.deepEqual(await readdir(shared), [`${first.body.sha256}.pkg`], 'one file, no copy left half-way');
    assert.ok((await readFile(path.join(shared, `${first.body.sha256}.pkg`))).equals(await readFile(file)));
    assert.match(b.stdout(), new RegExp(`"msg":"package already in the store \\(another master stored it\\): not written again","id":${second.body.id},"sha256":"${second.body.sha256}","store":"the folder ${shared}"`));
    for (const data of ['a', 'b']) assert.ok(!(await readdir(path.join(work, data))).includes('packages'), 'nothing in DATA/packages');
    for (const m of [a, b]) assert.deepEqual(await (await fetch(`${m.url}/health`)).json(), { status: 'ok', database: true, store: true });
    assert.deepEqual(await readdir(shared), [`${first.body.sha256}.pkg`], 'the health probes leave nothing');
    await Promise.all([a.stop(), b.stop()]);
  });

  it('at start, removes orphans and interrupted copies only once they are over an hour old', async () => {
    const [young, old] = ['c'.repeat(64), 'd'.repeat(64)];
    const [freshCopy, oldCopy] = [`.incoming-${randomUUID()}.part`, `.incoming-${randomUUID()}.part`];
    for (const name of [`${young}.pkg`, `${old}.pkg`, freshCopy, oldCopy]) await writeFile(path.join(shared, name), 'another master\'s');
    await age(path.join(shared, `${old}.pkg`), 2 * 3600);
    await age(path.join(shared, oldCopy), 2 * 3600);
    const before = await readdir(shared);
    const kept = before.find((f) => /^[0-9a-f]{64}\.pkg$/.test(f) && f !== `${young}.pkg` && f !== `${old}.pkg`);
    const a = await start('a');
    assert.deepEqual((await readdir(shared)).sort(), [freshCopy, kept, `${young}.pkg`].sort());
    assert.match(a.stdout(), /"msg":"files no package names kept in the shared store: younger than an hour, another master may be storing them","count":1/);
    assert.match(a.stdout(), /"msg":"store recovered after an unclean stop","tempFiles":0,"halfStored":0,"orphanFiles":1,"orphansKept":1,"missing":0/);
    await a.stop();
  });
});
