import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makePackage } from './helpers/openssl-package.js';
import { ADMIN_PASSWORD, BASIC } from './helpers/master.js';
import { multipartHead, multipartTail, openUpload, startMasterProcess, waitFor } from './helpers/master-process.js';
import { must, tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let packageFile: string;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
  packageFile = await makePackage(work, 'proc', { publisher: pki.good.rsa, payloadDir: path.join(pki.dir, 'ca') });
});
after(() => cleanup());

const env = { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD };
const tmpFiles = (data: string) => readdir(path.join(data, 'tmp'));
const api = async (url: string, route: string) => (await fetch(`${url}${route}`, { headers: { authorization: BASIC } })).json() as Promise<unknown>;

describe('propagator master (a real process)', () => {
  it('prints a generated password once, keeps it out of the logs, and stops on SIGTERM', async () => {
    const data = path.join(work, 'gen');
    const first = await startMasterProcess(['--data', data, '--trust', pki.root]);
    const password = /admin \/ (\S+)/.exec(first.stderr())?.[1];
    const token = /Enrollment token for slaves \(generated, shown only now\): (\S+)/.exec(first.stderr())?.[1];
    assert.ok(password && token);
    assert.equal((await fetch(`${first.url}/health`)).status, 200);
    const auth = `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`;
    assert.equal((await fetch(`${first.url}/api/servers`, { headers: { authorization: auth } })).status, 200);
    assert.equal(await first.stop(), 0);
    const logs = first.stdout();
    assert.match(logs, /"msg":"master started"/);
    assert.match(logs, /"msg":"request","method":"GET","path":"\/api\/servers","status":200/);
    assert.match(logs, /"msg":"master stopped"/);
    assert.ok(!logs.includes(password) && !logs.includes(token), 'no secret in the structured logs');
    const database = await readFile(path.join(data, 'propagator.sqlite'));
    assert.ok(!database.includes(password) && !database.includes(token), 'secrets stored hashed only');

    const second = await startMasterProcess(['--data', data, '--trust', pki.root]);
    assert.doesNotMatch(second.stderr(), /Admin password/);
    assert.equal((await fetch(`${second.url}/api/servers`, { headers: { authorization: auth } })).status, 200);
    await second.stop();
  });

  it('removes the temporary file of a client that disconnects mid-upload', async () => {
    const data = path.join(work, 'disconnect');
    const master = await startMasterProcess(['--data', data, '--trust', pki.root], env);
    try {
      const { request, response } = openUpload(master.url, BASIC);
      response.catch(() => undefined);
      request.write(multipartHead('Cut short'));
      request.write(Buffer.alloc(256 * 1024, 1));
      await waitFor(async () => (await tmpFiles(data)).length === 1, 10_000, 'the upload to start');
      request.destroy();
      await waitFor(async () => (await tmpFiles(data)).length === 0, 10_000, 'the temporary file to go');
      assert.deepEqual(await api(master.url, '/api/packages'), []);
      assert.equal((await fetch(`${master.url}/health`)).status, 200);
    } finally {
      await master.stop();
    }
  });

  it('starts again consistent after being killed mid-upload', async () => {
    const data = path.join(work, 'killed');
    const master = await startMasterProcess(['--data', data, '--trust', pki.root], env);
    const { request, response } = openUpload(master.url, BASIC);
    response.catch(() => undefined);
    request.write(multipartHead('Killed'));
    request.write(Buffer.alloc(512 * 1024, 2));
    await waitFor(async () => (await tmpFiles(data)).length === 1, 10_000, 'the upload to start');
    await master.stop('SIGKILL');
    request.destroy();
    assert.equal((await tmpFiles(data)).length, 1, 'the kill left a partial upload behind');
    const again = await startMasterProcess(['--data', data, '--trust', pki.root], env);
    try {
      assert.deepEqual(await tmpFiles(data), []);
      assert.deepEqual(await readdir(path.join(data, 'packages')), []);
      assert.deepEqual(await api(again.url, '/api/packages'), []);
      assert.match(again.stdout(), /"msg":"store recovered after an unclean stop","tempFiles":1/);
    } finally {
      await again.stop();
    }
  });

  it('finishes an upload in progress when asked to stop', async () => {
    const data = path.join(work, 'graceful');
    const master = await startMasterProcess(['--data', data, '--trust', pki.root], env);
    const { request, response } = openUpload(master.url, BASIC);
    request.write(multipartHead('Finished during shutdown'));
    const bytes = await readFile(packageFile);
    request.write(bytes.subarray(0, 1024));
    await waitFor(async () => (await tmpFiles(data)).length === 1, 10_000, 'the upload to start');
    master.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    request.end(Buffer.concat([bytes.subarray(1024), Buffer.from(multipartTail)]));
    const result = await response;
    assert.equal(result.status, 201, result.body);
    assert.equal(await master.exited, 0);
    const again = await startMasterProcess(['--data', data, '--trust', pki.root], env);
    try {
      const list = (await api(again.url, '/api/packages')) as { name: string }[];
      assert.deepEqual(list.map((p) => p.name), ['Finished during shutdown']);
    } finally {
      await again.stop();
    }
  });

  it('serves HTTPS with --tls-cert and --tls-key', async () => {
    const cert = path.join(work, 'tls.pem');
    const key = path.join(work, 'tls.key');
    await must('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
    const master = await startMasterProcess(['--data', path.join(work, 'tls'), '--trust', pki.root, '--tls-cert', cert, '--tls-key', key], env);
    try {
      assert.match(master.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      const ca = await readFile(cert);
      const status = await new Promise<number>((resolve, reject) => {
        https.get(`${master.url}/health`, { ca }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on('error', reject);
      });
      assert.equal(status, 200);
    } finally {
      await master.stop();
    }
  });
});
