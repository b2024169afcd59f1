import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { openDatabase } from '../server/db/open-database.js';
import { makePackage } from './helpers/openssl-package.js';
import { BASIC, createTestMaster, openMaster, type TestMaster } from './helpers/master.js';
import { must, tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

/** The package files of a store (on PostgreSQL it also holds its mark, .propagator-store). */
const packageFiles = async (dir: string) => (await readdir(dir)).filter((f) => f.endsWith('.pkg'));

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let payloadDir: string;
let counter = 0;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
  payloadDir = path.join(work, 'payload');
  await mkdir(payloadDir);
  await writeFile(path.join(payloadDir, 'watchdoc.conf'), 'release=6.2.0\n');
});
after(() => cleanup());

async function pkg(options: { version?: string; publisher?: TestPki['good']['rsa'] } = {}): Promise<string> {
  return makePackage(work, `m${++counter}`, { publisher: options.publisher ?? pki.good.rsa, payloadDir, version: options.version ?? `6.2.${counter}` });
}

const upload = (m: TestMaster, name: string | null, file: string | null) => {
  let req = supertest(m.app).post('/api/packages').set('Authorization', BASIC);
  if (name !== null) req = req.field('name', name);
  if (file !== null) req = req.attach('package', file);
  return req;
};

async function storeIsClean(m: TestMaster, packages: number): Promise<void> {
  assert.deepEqual(await readdir(m.store.tmpDir), [], 'no temporary upload left behind');
  assert.equal((await packageFiles(m.store.packagesDir)).length, packages, 'package files in the store');
  assert.equal((await m.db.all('SELECT id FROM packages')).length, packages, 'package rows');
}

describe('POST /api/packages', () => {
  let m: Awaited<ReturnType<typeof createTestMaster>>;
  before(async () => {
    m = await createTestMaster(pki.root);
  });
  after(() => m.cleanup());

  it('stores a valid package under its SHA-256 and describes it', async () => {
    const file = await pkg({ version: '6.2.0' });
    const [sha256] = (await must('sha256sum', [file])).split(' ');
    const res = await upload(m, '  Watchdoc 6.2.0  ', file).expect(201);
    assert.equal(res.headers.location, `/api/packages/${res.body.id}`);
    assert.deepEqual(
      { name: res.body.name, product: res.body.product, version: res.body.version, state: res.body.state, signer: res.body.signer, sha256: res.body.sha256 },
      { name: 'Watchdoc 6.2.0', product: 'watchdoc', version: '6.2.0', state: 'valid', signer: 'CN=Test Publisher signer', sha256 },
    );
    assert.equal(res.body.size, (await readFile(file)).length);
    assert.deepEqual(await packageFiles(m.store.packagesDir), [`${sha256}.pkg`]);
    assert.deepEqual(await readFile(path.join(m.store.packagesDir, `${sha256}.pkg`)), await readFile(file));
    const list = await supertest(m.app).get('/api/packages').set('Authorization', BASIC).expect(200);
    assert.deepEqual(list.body.map((p: { id: number }) => p.id), [res.body.id]);
    const one = await supertest(m.app).get(`/api/packages/${res.body.id}`).set('Authorization', BASIC).expect(200);
    assert.equal(one.body.name, 'Watchdoc 6.2.0');
    assert.ok(m.logs.some((l) => l.includes('"msg":"package added"')));
    await storeIsClean(m, 1);
  });

  it('refuses packages that are not secure or corrupt, and keeps nothing', async () => {
    const insecure = await pkg({ publisher: pki.bad.expired });
    const res = await upload(m, 'Expired publisher', insecure).expect(422);
    assert.deepEqual(res.body, { error: 'This update package is not secure: the signer certificate has expired (2021-01-01)' });
    const junk = path.join(work, 'junk.bin');
    await writeFile(junk, 'MZ this is a Windows program, not an update package '.repeat(100));
    const corrupt = await upload(m, 'Junk', junk).expect(422);
    assert.match(corrupt.body.error, /^This update package is corrupt: the file is not a tar or tar\.gz archive/);
    assert.ok(m.logs.some((l) => l.includes('"msg":"package rejected"') && l.includes('expired (2021-01-01)')));
    await storeIsClean(m, 1);
  });

  it('refuses a duplicate name (409) and content that is already stored (409)', async () => {
    const first = await pkg();
    await upload(m, 'Duplicate test', first).expect(201);
    const sameName = await upload(m, 'Duplicate test', await pkg()).expect(409);
    assert.deepEqual(sameName.body, { error: 'An update named "Duplicate test" already exists' });
    const sameContent = await upload(m, 'Another name', first).expect(409);
    assert.deepEqual(sameContent.body, { error: 'This package is already stored as "Duplicate test"' });
    await storeIsClean(m, 2);
  });

  it('lets one of two simultaneous uploads with the same name win', async () => {
    const [a, b] = await Promise.all([pkg(), pkg()]);
    const results = await Promise.all([upload(m, 'Race', a as string), upload(m, 'Race', b as string)]);
    assert.deepEqual(results.map((r) => r.status).sort(), [201, 409]);
    assert.deepEqual(results.find((r) => r.status === 409)?.body, { error: 'An update named "Race" already exists' });
    await storeIsClean(m, 3);
  });

  it('explains bad names', async () => {
    const file = await pkg();
    const cases: [string, string][] = [
      ['', 'Give the update a name (1 to 100 characters)'],
      ['   ', 'Give the update a name (1 to 100 characters)'],
      ['x'.repeat(101), 'The name must be at most 100 characters'],
      ['x'.repeat(200_000), 'The name must be at most 100 characters'],
      ['bad\u0007name', 'The name must not contain control characters'],
      ['line\nbreak', 'The name must not contain control characters'],
    ];
    for (const [name, error] of cases) {
      const res = await upload(m, name, file).expect(422);
      assert.deepEqual(res.body, { error }, JSON.stringify(name.slice(0, 20)));
    }
    assert.deepEqual((await upload(m, null, file).expect(422)).body, { error: 'Give the update a name (1 to 100 characters)' });
    await storeIsClean(m, 3);
  });

  it('explains a missing file, JSON instead of multipart, and a truncated form', async () => {
    assert.deepEqual((await upload(m, 'No file', null).expect(422)).body, { error: 'Choose a package file to upload (form field "package")' });
    const json = await supertest(m.app).post('/api/packages').set('Authorization', BASIC).send({ name: 'x', package: 'AAAA' }).expect(415);
    assert.deepEqual(json.body, { error: 'Send the package as multipart/form-data, with the file in the field "package" and its name in the field "name"' });
    const body = '--XYZ\r\nContent-Disposition: form-data; name="name"\r\n\r\ncut\r\n--XYZ\r\nContent-Disposition: form-data; name="package"; filename="p.pkg"\r\nContent-Type: application/octet-stream\r\n\r\n' + 'A'.repeat(5000);
    const cut = await supertest(m.app).post('/api/packages').set('Authorization', BASIC).set('Content-Type', 'multipart/form-data; boundary=XYZ').send(body).expect(400);
    assert.deepEqual(cut.body, { error: 'The upload is incomplete (the form ended early); send it again' });
    const wrongField = await supertest(m.app).post('/api/packages').set('Authorization', BASIC).field('name', 'x').attach('file', await pkg()).expect(422);
    assert.deepEqual(wrongField.body, { error: 'Unexpected file field "file": send one package in the field "package"' });
    await storeIsClean(m, 3);
  });

  it('requires the admin credentials', async () => {
    const none = await supertest(m.app).post('/api/packages').field('name', 'x').attach('package', await pkg()).expect(401);
    assert.equal(none.headers['www-authenticate'], 'Basic realm="Propagator", charset="UTF-8"');
    const wrong = await supertest(m.app).get('/api/packages').set('Authorization', `Basic ${Buffer.from('admin:guess').toString('base64')}`).expect(401);
    assert.deepEqual(wrong.body, { error: 'Wrong user name or password' });
    await supertest(m.app).get('/api/servers').expect(401);
    await supertest(m.app).delete('/api/packages/1').expect(401);
    await storeIsClean(m, 3);
  });

  it('deletes a package and its file', async () => {
    const created = await upload(m, 'To delete', await pkg()).expect(201);
    await supertest(m.app).delete(`/api/packages/${created.body.id}`).set('Authorization', BASIC).expect(204);
    await supertest(m.app).get(`/api/packages/${created.body.id}`).set('Authorization', BASIC).expect(404, { error: `There is no update with id ${created.body.id}` });
    await supertest(m.app).delete(`/api/packages/${created.body.id}`).set('Authorization', BASIC).expect(404);
    await supertest(m.app).get('/api/packages/abc').set('Authorization', BASIC).expect(422, { error: 'The id must be a positive whole number' });
    await storeIsClean(m, 3);
  });
});

describe('upload limits', () => {
  it('answers 413 above the configured size and keeps nothing', async () => {
    const m = await createTestMaster(pki.root, { maxUploadBytes: 8 * 1024 });
    try {
      const big = path.join(work, 'big.bin');
      await writeFile(big, Buffer.alloc(64 * 1024, 7));
      const res = await upload(m, 'Too big', big).expect(413);
      assert.deepEqual(res.body, { error: 'The package is larger than the upload limit of 8.0 KiB' });
      await storeIsClean(m, 0);
    } finally {
      await m.cleanup();
    }
  });
});

describe('restart and recovery', () => {
  it('finds its packages again after a restart, and cleans what a crash left', async () => {
    const { dir, cleanup: done } = await tempDir('propagator-restart-');
    try {
      const data = path.join(dir, 'data');
      const first = await openMaster(data, pki.root);
      const kept = await upload(first, 'Kept', await pkg()).expect(201);
      const vanishing = await upload(first, 'Vanishing', await pkg()).expect(201);
      await first.stop();

      // What a master killed mid-upload or mid-store leaves behind:
      await writeFile(path.join(first.store.tmpDir, 'upload-dead.part'), 'half an upload');
      await writeFile(path.join(first.store.packagesDir, `${'a'.repeat(64)}.pkg`), 'moved, never recorded');
      await rm(path.join(first.store.packagesDir, `${vanishing.body.sha256}.pkg`));
      const raw = await openDatabase(first.config.database);
      await raw.run(`INSERT INTO packages (name, product, version, size, sha256, payload_size, payload_sha256, manifest_json, signer_subject, chain_json, signer_not_after, state, uploaded_by, uploaded_at)
        VALUES ('Half stored', 'watchdoc', '9', 1, '${'b'.repeat(64)}', 1, '${'c'.repeat(64)}', '{}', 'x', '[]', '2099-01-01', 'storing', 'admin', '2026-01-01')`);
      await writeFile(path.join(first.store.packagesDir, `${'b'.repeat(64)}.pkg`), 'half stored');
      await raw.close();

      const second = await openMaster(data, pki.root);
      const list = await supertest(second.app).get('/api/packages').set('Authorization', BASIC).expect(200);
      assert.deepEqual(list.body.map((p: { name: string; state: string }) => [p.name, p.state]).sort(), [['Kept', 'valid'], ['Vanishing', 'missing']]);
      assert.deepEqual(await readdir(second.store.tmpDir), []);
      assert.deepEqual(await packageFiles(second.store.packagesDir), [`${kept.body.sha256}.pkg`]);
      assert.ok(second.logs.some((l) => l.includes('store recovered after an unclean stop') && l.includes('"orphanFiles":1') && l.includes('"halfStored":1') && l.includes('"tempFiles":1')));
      await second.stop();
    } finally {
      await done();
    }
  });
});
