import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, statfs } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { formatBytes } from '../server/http/presenters.js';
import { ADMIN_PASSWORD, BASIC } from './helpers/master.js';
import { BOUNDARY, multipartHead, openUpload, startMasterProcess, waitFor, type MasterProcess } from './helpers/master-process.js';
import { makePackage } from './helpers/openssl-package.js';
import { run, tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let packageFile: string;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
  packageFile = await makePackage(work, 'small', { publisher: pki.good.rsa, payloadDir: path.join(pki.dir, 'ca') });
});
// A test that times out never reaches its finally: what it started is stopped here too.
const running = new Set<MasterProcess>();
const mounted = new Set<string>();
after(async () => {
  await Promise.all([...running].map((m) => m.stop('SIGKILL')));
  for (const dir of mounted) await run('umount', [dir]);
  await cleanup();
});

const tmpFiles = (data: string) => readdir(path.join(data, 'tmp'));
const packageNames = async (url: string) => ((await (await fetch(`${url}/api/packages`, { headers: { authorization: BASIC } })).json()) as { name: string }[]).map((p) => p.name);

async function withMaster(data: string, env: NodeJS.ProcessEnv, test: (master: MasterProcess) => Promise<void>, args: string[] = []): Promise<void> {
  const master = await startMasterProcess(['--data', data, '--trust', pki.root, ...args], { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD, ...env });
  running.add(master);
  try {
    await test(master);
  } finally {
    await master.stop('SIGKILL');
    running.delete(master);
  }
}

/** A whole upload with a Content-Length, as curl or a browser sends it. */
async function uploadWhole(url: string, name: string): Promise<{ status: number; body: string }> {
  const form = new FormData();
  form.set('name', name);
  form.set('package', new Blob([await readFile(packageFile)]), 'package.pkg');
  const res = await fetch(`${url}/api/packages`, { method: 'POST', headers: { authorization: BASIC }, body: form });
  return { status: res.status, body: await res.text() };
}

/** Sends only the headers of an upload declaring `length` bytes; resolves with the answer. */
function declareUpload(url: string, length: number): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(`${url}/api/packages`, {
      method: 'POST',
      headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'content-length': String(length), authorization: BASIC },
    });
    request.on('response', (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
        request.destroy();
      });
    });
    request.on('error', reject);
    request.flushHeaders();
    request.write(multipartHead('Declared'));
  });
}

/** Mounts a tmpfs of `size` at dir; false when this machine does not allow it. */
async function mountTmpfs(dir: string, size: string): Promise<boolean> {
  await mkdir(dir, { recursive: true });
  const result = await run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]).catch(() => ({ code: -1 }));
  if (result.code === 0) mounted.add(dir);
  return result.code === 0;
}

describe('uploads on a real master process', () => {
  it('refuses one upload more than PROPAGATOR_MAX_PARALLEL_UPLOADS before reading its body', { timeout: 60_000 }, async () => {
    const data = path.join(work, 'parallel');
    await withMaster(data, { PROPAGATOR_MAX_PARALLEL_UPLOADS: '2' }, async (master) => {
      const open = [openUpload(master.url, BASIC), openUpload(master.url, BASIC)];
      for (const [i, { request, response }] of open.entries()) {
        response.catch(() => undefined);
        request.write(multipartHead(`Slow ${i}`));
        request.write(Buffer.alloc(64 * 1024, i));
      }
      await waitFor(async () => (await tmpFiles(data)).length === 2, 10_000, 'two uploads to start');

      const third = openUpload(master.url, BASIC);
      third.request.write(multipartHead('One too many'));
      third.request.write(Buffer.alloc(64 * 1024, 9));
      const refused = await third.response;
      assert.equal(refused.status, 429);
      assert.deepEqual(JSON.parse(refused.body), { error: '2 uploads are in progress already; try again when one has finished' });
      assert.equal(refused.headers['retry-after'], '10');
      third.request.destroy();
      assert.equal((await tmpFiles(data)).length, 2, 'the refused body was not stored');

      // One finishes (here: its client gives up), and the next upload goes through.
      open[0]?.request.destroy();
      await waitFor(async () => (await tmpFiles(data)).length === 1, 10_000, 'the first upload to go');
      const accepted = await uploadWhole(master.url, 'After one finished');
      assert.equal(accepted.status, 201, accepted.body);
      open[1]?.request.destroy();
      await waitFor(async () => (await tmpFiles(data)).length === 0, 10_000, 'the temporary files to go');
      assert.deepEqual(await packageNames(master.url), ['After one finished']);
    });
  });

  it('answers 413 before reading a body declared larger than --max-upload', { timeout: 60_000 }, async () => {
    const data = path.join(work, 'too-large');
    await withMaster(data, {}, async (master) => {
      const answer = await declareUpload(master.url, 10 * 1024 ** 2);
      assert.equal(answer.status, 413, answer.body);
      assert.deepEqual(JSON.parse(answer.body), { error: 'The package is larger than the upload limit of 1.0 MiB' });
      assert.deepEqual(await tmpFiles(data), []);
      assert.deepEqual(await packageNames(master.url), []);
    }, ['--max-upload', '1MiB']);
  });

  it('answers 507 before reading a body declared larger than the free disk', { timeout: 60_000 }, async () => {
    const data = path.join(work, 'declared');
    await withMaster(data, {}, async (master) => {
      const fs = await statfs(path.join(data, 'tmp'));
      const free = fs.bavail * fs.bsize;
      const declared = free + 1024 ** 4;
      const answer = await declareUpload(master.url, declared);
      assert.equal(answer.status, 507, answer.body);
      const message = (JSON.parse(answer.body) as { error: string }).error;
      const match = /^The master has not enough free disk for this package: it needs (.+), (\d+(?:\.\d)? (?:KiB|MiB|GiB|TiB)) is free$/.exec(message);
      assert.ok(match, message);
      assert.equal(match[1], formatBytes(declared));
      // Other programs write to this disk too: the master's figure is its own reading, close to ours.
      const [value, unit] = (match[2] ?? '').split(' ');
      const shown = Number(value) * 1024 ** ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'].indexOf(unit ?? '');
      assert.ok(Math.abs(shown - free) < free * 0.1 + 1024 ** 2, `${match[2]} is about ${formatBytes(free)}`);
      assert.deepEqual(await tmpFiles(data), []);
      assert.deepEqual(await packageNames(master.url), []);
    }, ['--max-upload', '100000GiB']);
  });

  it('answers 507 when the disk fills during an upload, removes the temporary file and keeps working', { timeout: 60_000 }, async (t: TestContext) => {
    const data = path.join(work, 'full');
    if (!(await mountTmpfs(data, '8m'))) {
      t.skip('cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)');
      return;
    }
    try {
      await withMaster(data, {}, async (master) => {
        // On this small disk nothing else writes: the free space the master reports is exact
        // (what is free, less 1 % of the disk kept in reserve).
        const fs = await statfs(path.join(data, 'tmp'));
        const usable = fs.bavail * fs.bsize - Math.floor(fs.blocks * fs.bsize * 0.01);
        const declared = await declareUpload(master.url, 64 * 1024 ** 2);
        assert.equal(declared.status, 507, declared.body);
        assert.deepEqual(JSON.parse(declared.body), { error: `The master has not enough free disk for this package: it needs 64 MiB, ${formatBytes(usable)} is free` });
        assert.match(formatBytes(usable), /^7\.\d MiB$/);

        // No Content-Length (chunked): the disk fills on the way. The answer comes at once, while
        // the body is still unfinished (the client has not ended it).
        const { request, response } = openUpload(master.url, BASIC);
        request.on('error', () => undefined);
        request.write(multipartHead('Too big for this disk'));
        request.write(Buffer.alloc(12 * 1024 ** 2, 5));
        const full = await response;
        request.destroy();
        assert.equal(full.status, 507, full.body);
        assert.deepEqual(JSON.parse(full.body), { error: 'The master\'s disk is full (ENOSPC): nothing was saved. Free some space on it, then try again' });
        assert.deepEqual(await tmpFiles(data), []);
        assert.deepEqual(await readdir(path.join(data, 'packages')), []);
        assert.deepEqual(await packageNames(master.url), []);

        const small = await uploadWhole(master.url, 'Fits');
        assert.equal(small.status, 201, small.body);
        assert.deepEqual(await packageNames(master.url), ['Fits']);
        assert.deepEqual(await tmpFiles(data), []);
        assert.match(master.stdout(), /"status":507/);
      });
    } finally {
      await run('umount', [data]);
      mounted.delete(data);
    }
  });

  it('aborts an upload that sends nothing for PROPAGATOR_UPLOAD_IDLE_TIMEOUT with 408', { timeout: 60_000 }, async () => {
    const data = path.join(work, 'stalled');
    await withMaster(data, { PROPAGATOR_UPLOAD_IDLE_TIMEOUT: '1' }, async (master) => {
      const { request, response } = openUpload(master.url, BASIC);
      request.on('error', () => undefined);
      request.write(multipartHead('Stalled'));
      request.write(Buffer.alloc(256 * 1024, 7));
      await waitFor(async () => (await tmpFiles(data)).length === 1, 10_000, 'the upload to start');
      const answer = await Promise.race([response, new Promise<null>((r) => setTimeout(() => r(null), 15_000))]);
      assert.ok(answer, 'no answer 15 s after the upload stalled');
      assert.equal(answer.status, 408);
      assert.deepEqual(JSON.parse(answer.body), { error: 'The upload stalled: no data for 1 s' });
      request.destroy();
      assert.deepEqual(await tmpFiles(data), []);
      assert.deepEqual(await packageNames(master.url), []);
      assert.match(master.stdout(), /"level":"warn","msg":"upload stalled"/);
      const again = await uploadWhole(master.url, 'After a stall');
      assert.equal(again.status, 201, again.body);
    });
  });
});
