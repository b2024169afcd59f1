import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, openAsBlob } from 'node:fs';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SqliteDatabase } from '../server/db/sqlite-database.js';
import { BASIC, ADMIN_PASSWORD } from './helpers/master.js';
import { startMasterProcess, waitFor, type MasterProcess } from './helpers/master-process.js';
import { makePackage } from './helpers/openssl-package.js';
import { makeRandomPayload } from './helpers/random-payload.js';
import { freePort, propagator, tempDir } from './helpers/run.js';
import { startRecordingProxy, type RecordingProxy } from './helpers/recording-proxy.js';
import { S3_ENV, S3_KEY_ID, S3_SECRET, startS3Server, type S3Server } from './helpers/s3-server.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

const MIB = 1024 * 1024;
const env = { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD, ...S3_ENV };

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let s3: S3Server;
/** A package smaller than the part size (one PutObject) and one of three 5 MiB parts (multipart). */
let small: string;
let large: string;
const masters: MasterProcess[] = [];
const proxies: RecordingProxy[] = [];

before(async () => {
  ({ dir: work, cleanup } = await tempDir('propagator-s3-'));
  pki = await createTestPki(path.join(work, 'pki'));
  s3 = await startS3Server(path.join(work, 's3'), ['packages', 'shared', 'recovery', 'outage']);
  const payload = path.join(work, 'payload');
  await mkdir(payload);
  await writeFile(path.join(payload, 'watchdoc.conf'), 'release\n');
  small = await makePackage(work, 'small', { publisher: pki.good.rsa, payloadDir: payload, version: '6.2.0' });
  large = await makePackage(work, 'large', { publisher: pki.good.ecP256, payloadFile: await makeRandomPayload(path.join(work, 'large.tar.gz'), 12 * MIB), version: '6.3.0' });
});
after(async () => {
  for (const m of masters) await m.stop('SIGKILL');
  for (const p of proxies) await p.close();
  await s3?.stop();
  await cleanup();
});

async function startMaster(data: string, store: string, extra: string[] = []): Promise<MasterProcess> {
  const master = await startMasterProcess(['--data', path.join(work, data), '--trust', pki.root, '--store', store, ...extra], env);
  masters.push(master);
  return master;
}

async function upload(master: MasterProcess, file: string, name: string): Promise<{ status: number; body: { id: number; sha256: string; size: number; state: string; error?: string } }> {
  const form = new FormData();
  form.set('name', name);
  form.set('package', await openAsBlob(file), path.basename(file));
  const res = await fetch(`${master.url}/api/packages`, { method: 'POST', headers: { authorization: BASIC }, body: form });
  return { status: res.status, body: await res.json() as { id: number; sha256: string; size: number; state: string; error?: string } };
}

const sha256Of = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex');
const packages = async (master: MasterProcess) => (await (await fetch(`${master.url}/api/packages`, { headers: { authorization: BASIC } })).json()) as { id: number; name: string; state: string; sha256: string }[];
const health = async (master: MasterProcess) => {
  const res = await fetch(`${master.url}/health`);
  return { status: res.status, body: await res.json() as Record<string, unknown> };
};

describe('a master whose --store is a bucket that it cannot use refuses to start', () => {
  /** Runs `propagator master` to its end: exit status 2 and one line on stderr, like any configuration error. */
  async function refused(store: string, processEnv: NodeJS.ProcessEnv, line: string) {
    const data = path.join(work, `refused-${Math.random().toString(36).slice(2)}`);
    const run = await propagator(['master', '--host', '127.0.0.1', '--port', '0', '--data', data, '--trust', pki.root, '--store', store], { env: processEnv });
    assert.equal(run.stderr, `propagator: ${line}\n`);
    assert.equal(run.code, 2);
    assert.ok(!run.stderr.includes(S3_SECRET) && !run.stdout.includes(S3_SECRET));
  }
  const noAws = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AWS_')));

  it('says the bucket does not exist', async () => {
    await refused(s3.url('no-such-bucket'), { ...process.env, ...env }, `the package store cannot be used: the S3 bucket "no-such-bucket" at ${s3.endpoint} does not exist (create it first)`);
  });

  it('says the bucket refuses the credentials (s3rver checks the key id only)', async () => {
    await refused(s3.url('packages'), { ...process.env, ...env, AWS_ACCESS_KEY_ID: 'AKIAWRONGKEYID' },
      `the package store cannot be used: the S3 bucket "packages" at ${s3.endpoint} refuses these credentials (HTTP 403): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`);
  });

  it('says there are no credentials at all', async () => {
    const home = path.join(work, 'empty-home');
    await mkdir(home, { recursive: true });
    // No profile file, and no instance metadata to ask (this is no EC2 machine).
    await refused(s3.url('packages'), { ...noAws(), HOME: home, AWS_EC2_METADATA_DISABLED: 'true', PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD },
      'the package store cannot be used: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY');
  });

  it('says the endpoint cannot be reached', async () => {
    const nobody = await freePort();
    await refused(`s3://packages?endpoint=http://127.0.0.1:${nobody}&forcePathStyle=true`, { ...process.env, ...env },
      `the package store cannot be used: cannot reach the S3 endpoint http://127.0.0.1:${nobody} (ECONNREFUSED)`);
  });

  it('refuses a URL carrying credentials without showing them', async () => {
    await refused(`s3://${S3_KEY_ID}:${S3_SECRET}@packages?endpoint=${s3.endpoint}`, { ...process.env, ...env },
      '--store: the URL must not carry credentials: give them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the URL is shown in process lists and logs)');
  });
});

describe('packages in a bucket (s3rver in its own process)', () => {
  it('stores each package once its verification passed, byte for byte, in one PUT or in 5 MiB parts, under the prefix', async () => {
    // The master reaches the bucket through a proxy that records its requests.
    const proxy = await startRecordingProxy(s3.port);
    proxies.push(proxy);
    const master = await startMaster('bytes', s3.url('packages', '&prefix=fleet/eu&partSize=5MiB').replace(s3.endpoint, proxy.url));
    const one = await upload(master, small, 'Small');
    const three = await upload(master, large, 'Large');
    assert.deepEqual([one.status, three.status], [201, 201], JSON.stringify([one.body, three.body]));
    assert.ok((await stat(large)).size > 10 * MIB, 'the large package takes three parts');
    for (const [file, body] of [[small, one.body], [large, three.body]] as const) {
      assert.equal(body.sha256, await sha256Of(file));
      assert.equal(await s3.sha256('packages', `fleet/eu/packages/${body.sha256}.pkg`), body.sha256, 'the object holds exactly the uploaded bytes');
    }
    assert.deepEqual((await s3.objects('packages', 'fleet/')).map((o) => [o.key, o.size]).sort(), [
      [`fleet/eu/packages/${one.body.sha256}.pkg`, (await stat(small)).size],
      [`fleet/eu/packages/${three.body.sha256}.pkg`, (await stat(large)).size],
    ].sort());
    // Nothing of it on the master's disk: the upload went through DATA/tmp, which is empty again.
    assert.ok(!(await readdir(path.join(work, 'bytes'))).includes('packages'));
    assert.deepEqual(await readdir(path.join(work, 'bytes', 'tmp')), []);
    // Checksums only where S3 requires them: every body is signed with its own SHA-256, none is
    // aws-chunked, none carries the SDK's default CRC32 headers.
    const writes = proxy.requests.filter((r) => r.method === 'PUT' || r.method === 'POST');
    const shown = writes.map((r) => `${r.method} ${r.url.replace(/uploadId=[^&]+/, 'uploadId=ID').replace(/\/[0-9a-f]{64}\.pkg/, '/SHA.pkg')}`);
    assert.deepEqual(shown, [
      'PUT /packages/fleet/eu/packages/SHA.pkg?x-id=PutObject',
      'POST /packages/fleet/eu/packages/SHA.pkg?uploads=',
      'PUT /packages/fleet/eu/packages/SHA.pkg?partNumber=1&uploadId=ID&x-id=UploadPart',
      'PUT /packages/fleet/eu/packages/SHA.pkg?partNumber=2&uploadId=ID&x-id=UploadPart',
      'PUT /packages/fleet/eu/packages/SHA.pkg?partNumber=3&uploadId=ID&x-id=UploadPart',
      'POST /packages/fleet/eu/packages/SHA.pkg?uploadId=ID',
    ]);
    for (const r of writes) {
      assert.deepEqual(Object.keys(r.headers).filter((h) => /checksum/.test(h)), [], `${r.method} ${r.url}`);
      assert.notEqual(r.headers['content-encoding'], 'aws-chunked');
      if (r.url.includes('UploadPart') || r.url.includes('PutObject')) assert.match(String(r.headers['x-amz-content-sha256']), /^[0-9a-f]{64}$/);
    }

    // A refused package never reaches the bucket.
    const corrupt = path.join(work, 'corrupt.pkg');
    await writeFile(corrupt, (await readFile(small)).subarray(0, 3000));
    const refused = await upload(master, corrupt, 'Corrupt');
    assert.equal(refused.status, 422);
    assert.equal((await s3.objects('packages', 'fleet/eu/packages/')).length, 2);

    // Deleting a package removes its object.
    assert.equal((await fetch(`${master.url}/api/packages/${one.body.id}`, { method: 'DELETE', headers: { authorization: BASIC } })).status, 204);
    assert.deepEqual((await s3.objects('packages', 'fleet/')).map((o) => o.key), [`fleet/eu/packages/${three.body.sha256}.pkg`]);
    assert.equal((await health(master)).status, 200);
    await master.stop();
    assert.match(master.stdout(), new RegExp(`"msg":"master started".*"store":"the S3 bucket \\\\"packages\\\\" at ${proxy.url}"`));
    assert.ok(!master.stdout().includes(S3_SECRET) && !master.stderr().includes(S3_SECRET), 'the secret key is in no log');
  });

  it('needs WHEN_REQUIRED checksums: with the SDK\'s defaults, s3rver keeps the framing of a streamed (aws-chunked) PUT in the object', async () => {
    const client = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: S3_KEY_ID, secretAccessKey: S3_SECRET } });
    const body = await readFile(small);
    await client.send(new PutObjectCommand({ Bucket: 'packages', Key: 'control/sdk-defaults.pkg', Body: createReadStream(small), ContentLength: body.length }));
    const got = Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: 'packages', Key: 'control/sdk-defaults.pkg' }))).Body!.transformToByteArray());
    assert.notEqual(got.length, body.length, 'the SDK default corrupts the object on s3rver: the test above would see it');
    assert.ok(got.includes('x-amz-checksum-crc32'), 'the trailer is stored with the data');
    client.destroy();
  });

  it('stores a package two masters with their own databases add once, and the second does not send it again', async () => {
    const first = await startMaster('shared-a', s3.url('shared', '&partSize=5MiB'));
    const second = await startMaster('shared-b', s3.url('shared', '&partSize=5MiB'));
    const a = await upload(first, large, 'Large on A');
    const b = await upload(second, large, 'Large on B');
    assert.deepEqual([a.status, b.status, a.body.sha256], [201, 201, b.body.sha256]);
    assert.deepEqual((await s3.objects('shared')).map((o) => o.key), [`packages/${a.body.sha256}.pkg`]);
    assert.match(second.stdout(), new RegExp(`"msg":"package already in the store \\(another master stored it\\): not written again","id":${b.body.id},"sha256":"${b.body.sha256}"`));
    assert.doesNotMatch(first.stdout(), /package already in the store/);
    await Promise.all([first.stop(), second.stop()]);
  });

  it('at start, removes only orphans over an hour old (another master may be storing the rest), and flags a package whose object vanished', async () => {
    const master = await startMaster('recovery', s3.url('recovery'));
    const kept = await upload(master, small, 'Kept');
    const vanishing = await upload(master, large, 'Vanishing');
    await master.stop();
    const young = 'a'.repeat(64);
    const old = 'b'.repeat(64);
    await s3.put('recovery', `packages/${young}.pkg`, 'stored by another master a moment ago');
    await s3.put('recovery', `packages/${old}.pkg`, 'left by a master that died an hour ago');
    await s3.age('recovery', `packages/${old}.pkg`, 2 * 3600);
    await s3.put('recovery', 'packages/README.txt', 'not a package: left alone');
    const vanished = await readFile(large);
    await s3.remove('recovery', `packages/${vanishing.body.sha256}.pkg`);

    const again = await startMaster('recovery', s3.url('recovery'));
    assert.deepEqual((await s3.objects('recovery')).map((o) => o.key), [`packages/${young}.pkg`, 'packages/README.txt', `packages/${kept.body.sha256}.pkg`].sort());
    assert.deepEqual((await packages(again)).map((p) => [p.name, p.state]).sort(), [['Kept', 'valid'], ['Vanishing', 'missing']]);
    assert.match(again.stdout(), /"msg":"files no package names kept in the shared store: younger than an hour, another master may be storing them","count":1/);
    assert.match(again.stdout(), /"msg":"store recovered after an unclean stop","tempFiles":0,"halfStored":0,"orphanFiles":1,"orphansKept":1,"missing":1/);
    await again.stop();

    // The object back (restored from a backup): the package is valid again.
    await s3.put('recovery', `packages/${vanishing.body.sha256}.pkg`, vanished);
    const third = await startMaster('recovery', s3.url('recovery'));
    assert.deepEqual((await packages(third)).map((p) => [p.name, p.state]).sort(), [['Kept', 'valid'], ['Vanishing', 'valid']]);
    await third.stop();
  });

  it('with the bucket service gone: the upload fails saying so and keeps nothing, /health answers 503 with the reason, and both heal when it is back', async () => {
    const master = await startMaster('outage', s3.url('outage'));
    const before = await upload(master, small, 'Before');
    assert.equal(before.status, 201);
    await s3.stop();
    try {
      const during = await upload(master, large, 'During');
      assert.deepEqual(during, { status: 503, body: { error: `The package store is unavailable: cannot reach the S3 endpoint ${s3.endpoint} (ECONNREFUSED) (storing the package)` } });
      assert.deepEqual(await readdir(path.join(work, 'outage', 'tmp')), [], 'no temporary file left');
      assert.deepEqual((await packages(master)).map((p) => p.name), ['Before']);
      assert.deepEqual(await health(master), {
        status: 503,
        body: { status: 'unavailable', database: true, store: false, reason: `cannot reach the S3 endpoint ${s3.endpoint} (ECONNREFUSED): the package store cannot be written` },
      });
    } finally {
      await s3.start();
    }
    await waitFor(async () => (await health(master)).status === 200, 15_000, '/health to heal');
    assert.deepEqual((await health(master)).body, { status: 'ok', database: true, store: true });
    const afterwards = await upload(master, large, 'During');
    assert.equal(afterwards.status, 201, JSON.stringify(afterwards.body));
    assert.match(master.stdout(), /"msg":"the master cannot write to its disk: \/health answers 503","reason":"cannot reach the S3 endpoint [^"]+ \(ECONNREFUSED\): the package store cannot be written"/);
    assert.match(master.stdout(), /"msg":"the master can write to its disk again: \/health answers 200"/);
    await master.stop();
    // No row was left "storing" by the failed upload (recovery never ran between: the database as the master left it).
    const db = await SqliteDatabase.open(path.join(work, 'outage', 'propagator.sqlite'));
    try {
      assert.deepEqual((await db.all<{ name: string; state: string }>('SELECT name, state FROM packages ORDER BY id')).map((r) => [r.name, r.state]), [['Before', 'valid'], ['During', 'valid']]);
    } finally {
      await db.close();
    }
    // The health probe leaves nothing in the bucket.
    assert.deepEqual((await s3.objects('outage')).map((o) => o.key).filter((k) => !k.startsWith('packages/')), []);
  });
});
