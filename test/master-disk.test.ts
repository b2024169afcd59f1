import assert from 'node:assert/strict';
import { readdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import sqlite3 from 'sqlite3';
import { mountTmpfs, unmount } from './helpers/disks.js';
import { ADMIN_PASSWORD, BASIC } from './helpers/master.js';
import { multipartHead, multipartTail, openUpload, startMasterProcess, type MasterProcess } from './helpers/master-process.js';
import { makePackage } from './helpers/openssl-package.js';
import { makeRandomPayload } from './helpers/random-payload.js';
import { tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let smallPackage: string;
let midPackage: string;
const running = new Set<MasterProcess>();
const mounted = new Set<string>();

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
  smallPackage = await makePackage(work, 'small', { publisher: pki.good.rsa, payloadDir: path.join(pki.dir, 'ca') });
  midPackage = await makePackage(work, 'mid', { publisher: pki.good.rsa, payloadFile: await makeRandomPayload(path.join(work, 'mid.tar.gz'), 2 * 1024 * 1024) });
});
after(async () => {
  await Promise.all([...running].map((m) => m.stop('SIGKILL')));
  for (const dir of mounted) await unmount(dir).catch(() => undefined);
  await cleanup();
});

/** Every row of the packages table, "storing" ones included (the API lists only finished ones). */
function packageRows(database: string): Promise<{ name: string; state: string }[]> {
  return new Promise((resolve, reject) => {
    const db = new sqlite3.Database(database, sqlite3.OPEN_READONLY, (err) => {
      if (err) return reject(err);
      db.all('SELECT name, state FROM packages ORDER BY id', (e: Error | null, rows: { name: string; state: string }[]) => {
        db.close();
        if (e) reject(e);
        else resolve(rows);
      });
    });
  });
}

const countLines = (text: string, pattern: RegExp) => text.split('\n').filter((l) => pattern.test(l)).length;

/** A whole upload sent chunked (no Content-Length), as a streaming client does: no check before the body. */
async function uploadChunked(url: string, name: string, file: string): Promise<{ status: number; body: unknown }> {
  const { request, response } = openUpload(url, BASIC);
  request.write(multipartHead(name));
  request.write(await readFile(file));
  request.end(multipartTail);
  const answer = await response;
  return { status: answer.status, body: JSON.parse(answer.body) };
}

describe('a full disk on a real master process', () => {
  it('answers 507 "the master\'s disk is full" when the database cannot grow to record a package, and leaves nothing', { timeout: 90_000 }, async (t: TestContext) => {
    const data = path.join(work, 'insert');
    const skip = await mountTmpfs(data, '8m');
    if (skip) {
      t.skip(skip);
      return;
    }
    mounted.add(data);
    const master = await startMasterProcess(['--data', data, '--trust', pki.root], { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD });
    running.add(master);
    // Fill the disk so that the package itself fits, with a few pages to spare: the file is
    // received and verified, then the database (its WAL) cannot grow to record it. Before: 500.
    // From no page to spare up, every answer is 507 with nothing left, until one fits.
    const size = (await readFile(midPackage)).length;
    const filler = path.join(data, 'filler.bin');
    let refusals = 0;
    for (let spare = 0; spare < 64; spare++) {
      const fs = await statfs(data);
      await writeFile(filler, Buffer.alloc(Math.max(0, fs.bavail * fs.bsize - (Math.ceil(size / fs.bsize) + spare) * fs.bsize)));
      const answer = await uploadChunked(master.url, `Spare ${spare}`, midPackage);
      await rm(filler);
      if (answer.status === 201) break;
      refusals++;
      assert.deepEqual(answer, { status: 507, body: { error: 'The master\'s disk is full (SQLITE_FULL): nothing was saved. Free some space on it, then try again' } }, `with ${spare} pages to spare`);
      assert.deepEqual(await readdir(path.join(data, 'tmp')), []);
      assert.deepEqual(await readdir(path.join(data, 'packages')), []);
      assert.deepEqual(await packageRows(path.join(data, 'propagator.sqlite')), []);
    }
    assert.ok(refusals > 0, 'the database never filled the disk');
    assert.equal(countLines(master.stdout(), /"level":"error","msg":"request failed","method":"POST","path":"\/api\/packages","status":507,"error":"SQLITE_FULL: database or disk is full","code":"SQLITE_FULL"\}/), refusals);
    const stored = await packageRows(path.join(data, 'propagator.sqlite'));
    assert.deepEqual(stored, [{ name: `Spare ${refusals}`, state: 'valid' }]);
    assert.equal((await readdir(path.join(data, 'packages'))).length, 1);

    // The master keeps working: another package, the disk left as it is.
    const small = await uploadChunked(master.url, 'Small', smallPackage);
    assert.equal(small.status, 201, JSON.stringify(small.body));
    await master.stop('SIGKILL');
    running.delete(master);
  });
});
