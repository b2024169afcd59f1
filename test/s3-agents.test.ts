import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, readlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AgentProcess } from './helpers/agent-process.js';
import { startCuttingProxy, type CuttingProxy } from './helpers/cutting-proxy.js';
import { waitFor } from './helpers/master-process.js';
import { makePackage } from './helpers/openssl-package.js';
import { openProcessDomain, type ProcessDomain } from './helpers/process-domain.js';
import { makeRandomPayload } from './helpers/random-payload.js';
import { startRecordingProxy, type RecordingProxy } from './helpers/recording-proxy.js';
import { makeRelease } from './helpers/releases.js';
import { S3_ENV, S3_SECRET, startS3Server, type S3Server } from './helpers/s3-server.js';
import { checkPresignedGet } from './helpers/sigv4.js';
import { SimulatedAgent } from './helpers/simulated-agent.js';

const TOKEN = 's3-agents-enrollment-token-0123456789';
const MIB = 1024 * 1024;
const SEND_IDLE_SECONDS = 3;

let d: ProcessDomain;
let s3: S3Server;
/** Between the master (and, with presigned URLs, the agents) and s3rver: records every request. */
let bucketProxy: RecordingProxy;
/** Between the mailbox agent and the master: cuts its first package download after 1 MiB. */
let cutter: CuttingProxy;
let mailbox: AgentProcess;
let bidirectional: AgentProcess;
let sim: SimulatedAgent;
let store: string;

before(async () => {
  d = await openProcessDomain(TOKEN, [], S3_ENV);
  s3 = await startS3Server(path.join(d.work, 's3'), ['fleet']);
  bucketProxy = await startRecordingProxy(s3.port);
  store = s3.url('fleet', '&partSize=5MiB').replace(s3.endpoint, bucketProxy.url);
  await d.startMaster(['--store', store, '--send-idle-timeout', String(SEND_IDLE_SECONDS), '--log-level', 'debug']);
  cutter = await startCuttingProxy(d.port, { match: /^GET \/api\/agent\/packages\//, cutAfterBytes: MIB });
  mailbox = await d.startAgent('s3-mailbox', 'mailbox', path.join(d.work, 'mailbox'), [], {}, cutter.url);
  bidirectional = await d.startAgent('s3-bidi', 'bidirectional', path.join(d.work, 'bidi'));
  sim = await new SimulatedAgent(`http://127.0.0.1:${d.port}`, 's3-simulated').join(TOKEN);
});
after(async () => {
  await d?.close();
  await cutter?.close();
  await bucketProxy?.close();
  await s3?.stop();
});

async function release(version: string, padding: number): Promise<{ id: number; sha256: string; size: number; file: string }> {
  const file = await makeRelease(d.work, d.pki.good.rsa, version, { padding });
  return { ...(await d.upload(file, `Watchdoc ${version}`)), file };
}

/** Propagates then applies to both agent processes; every target must succeed. */
async function rollOut(packageId: number, version: string): Promise<void> {
  const servers = [mailbox.serverId, bidirectional.serverId];
  for (const action of ['propagate', 'apply'] as const) {
    const targets = await d.ended(await d.operate(action, packageId, servers));
    assert.deepEqual(targets.map((t) => [t.server, t.state]).sort(), [['s3-bidi', 'succeeded'], ['s3-mailbox', 'succeeded']], JSON.stringify(targets));
  }
  for (const dir of ['mailbox', 'bidi']) assert.equal(await readlink(path.join(d.work, dir, 'current')), path.join('releases', version));
}

/** Restarts the master on the same port, data and bucket, with other flags. */
async function restartMaster(extra: string[]): Promise<void> {
  await d.master?.stop();
  await d.startMaster(['--store', store, '--send-idle-timeout', String(SEND_IDLE_SECONDS), '--log-level', 'debug', ...extra]);
  await sim.openSession();
}

const packageRoute = (sha256: string) => `/api/agent/packages/${sha256}`;
const presignedGets = (sha256: string) => bucketProxy.requests.filter((r) => r.method === 'GET' && r.url.startsWith(`/fleet/packages/${sha256}.pkg?`) && r.url.includes('X-Amz-Signature='));
const sha256Of = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

describe('agents download packages from a bucket through the master (GetObject with the Range asked for)', () => {
  it('propagates and applies a multipart package to both modes, resuming a cut download with a Range', { timeout: 120_000 }, async () => {
    const pkg = await release('6.2.0', 8 * MIB);
    assert.ok(pkg.size > 5 * MIB, 'stored in parts');
    await rollOut(pkg.id, '6.2.0');
    assert.equal(cutter.cuts, 1);
    assert.match(mailbox.logs(), new RegExp(`"msg":"download resumed","agent":"s3-mailbox","sha256":"${pkg.sha256}","from":[1-9]\\d*`));
    const served = d.master?.stdout() ?? '';
    assert.match(served, new RegExp(`"method":"GET","path":"${packageRoute(pkg.sha256)}","status":206`), 'the resume read a range of the object');
    // The master read the object with the agents' ranges: a GET from 0, and one from where the cut left it.
    const ranges = bucketProxy.requests.filter((r) => r.method === 'GET' && r.url.startsWith(`/fleet/packages/${pkg.sha256}.pkg`)).map((r) => r.headers.range);
    assert.ok(ranges.includes(`bytes=0-${pkg.size - 1}`), JSON.stringify(ranges));
    assert.ok(ranges.some((r) => /^bytes=[1-9]\d*-/.test(String(r)) && r !== `bytes=0-${pkg.size - 1}`), JSON.stringify(ranges));
  });

  it('answers a single Range with 206, one outside the package with 416, and HEAD with the size, as from a folder', async () => {
    const pkg = await release('6.2.1', MIB);
    assert.equal((await d.api('POST', '/api/operations', { action: 'propagate', package: pkg.id, servers: [sim.serverId] })).status, 202);
    const bytes = await readFile(pkg.file);
    // (The call's MAC covers its method: HEAD, which agents never send, is MAC'd as such here.)
    const get = (headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') => fetch(`http://127.0.0.1:${d.port}${packageRoute(pkg.sha256)}`, {
      method, headers: { ...sim.sessionHeaders(method as 'GET', packageRoute(pkg.sha256)), ...headers },
    });
    const part = await get({ range: 'bytes=1000-1999' });
    assert.deepEqual([part.status, part.headers.get('content-range'), part.headers.get('content-length')], [206, `bytes 1000-1999/${pkg.size}`, '1000']);
    assert.ok(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(1000, 2000)));
    const tail = await get({ range: `bytes=${pkg.size - 10}-` });
    assert.ok(Buffer.from(await tail.arrayBuffer()).equals(bytes.subarray(pkg.size - 10)));
    const outside = await get({ range: `bytes=${pkg.size}-` });
    assert.deepEqual([outside.status, outside.headers.get('content-range'), await outside.json()], [416, `bytes */${pkg.size}`, { error: `The range asked for is outside the package (${pkg.size} bytes)` }]);
    const whole = await get();
    assert.equal(sha256Of(Buffer.from(await whole.arrayBuffer())), pkg.sha256);
    const head = await get({}, 'HEAD');
    assert.deepEqual([head.status, head.headers.get('content-length'), (await head.arrayBuffer()).byteLength], [200, String(pkg.size), 0]);
  });

  it('cuts a download whose client stops reading after --send-idle-timeout, closing its stream from the bucket', { timeout: 90_000 }, async () => {
    // Far more than the loopback buffers hold, so a client that reads nothing stalls the master.
    const file = await makePackage(d.work, 'big', { publisher: d.pki.good.rsa, payloadFile: await makeRandomPayload(path.join(d.work, 'big.tar.gz'), 48 * MIB), version: '6.2.2' });
    const pkg = await d.upload(file, 'Big');
    assert.equal((await d.api('POST', '/api/operations', { action: 'propagate', package: pkg.id, servers: [sim.serverId] })).status, 202);
    const route = packageRoute(pkg.sha256);
    const socket = net.connect(d.port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    let received = 0;
    let reading = false;
    socket.on('data', (c: Buffer) => {
      received += c.length;
      if (!reading) socket.pause();
    });
    socket.on('error', () => undefined);
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.write(`GET ${route} HTTP/1.1\r\nHost: 127.0.0.1:${d.port}\r\n${Object.entries(sim.sessionHeaders('GET', route)).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
    await waitFor(async () => received > 0, 10_000, 'the first bytes');
    const stalled = new RegExp(`"level":"warn","msg":"download stalled: connection closed","method":"GET","path":"${route}","sentBytes":\\d+,"seconds":${SEND_IDLE_SECONDS}\\}`);
    await waitFor(async () => stalled.test(d.master?.stdout() ?? ''), 20_000, 'the master to cut the stalled download');
    // The master no longer reads the object: its stream from the bucket was closed with the download.
    const fromBucket = bucketProxy.requests.filter((r) => r.method === 'GET' && r.url.startsWith(`/fleet/packages/${pkg.sha256}.pkg`));
    assert.equal(fromBucket.length, 1);
    await waitFor(async () => fromBucket[0]?.abandoned === true, 10_000, 'the master to close its stream from the bucket');
    reading = true;
    socket.resume();
    await closed;
    assert.equal((await fetch(`http://127.0.0.1:${d.port}/health`)).status, 200);
  });
});

describe('agents download packages from the bucket itself with presigned URLs (--store-presign)', () => {
  it('redirects each download to a short-lived URL that the agents follow without their credentials, resuming with a Range there', { timeout: 120_000 }, async () => {
    await restartMaster(['--store-presign', '60']);
    const pkg = await release('6.3.0', 6 * MIB);
    bucketProxy.cutNext(new RegExp(`^GET /fleet/packages/${pkg.sha256}\\.pkg\\?.*X-Amz-Signature=`), MIB);
    await rollOut(pkg.id, '6.3.0');
    const served = d.master?.stdout() ?? '';
    assert.match(served, new RegExp(`"path":"${packageRoute(pkg.sha256)}","status":307`));
    assert.doesNotMatch(served, new RegExp(`"path":"${packageRoute(pkg.sha256)}","status":20[06]`), 'no byte of it through the master');
    const gets = presignedGets(pkg.sha256);
    assert.ok(gets.length >= 3, `${gets.length} downloads from the bucket: two agents and a resume`);
    for (const r of gets) {
      assert.equal(r.headers.authorization, undefined, 'no credentials of the agent at the bucket');
      assert.deepEqual(Object.keys(r.headers).filter((h) => h.startsWith('x-propagator')), [], 'no session header either');
    }
    const logs = (mailbox.logs() + bidirectional.logs()).split('\n').filter((l) => l.includes(pkg.sha256)).join('\n');
    assert.ok(gets.some((r) => /^bytes=[1-9]\d*-$/.test(String(r.headers.range))), `the cut download resumed at the bucket with a Range: ${JSON.stringify(gets.map((r) => r.headers.range ?? null))}\n${logs}`);
    assert.match(mailbox.logs() + bidirectional.logs(), new RegExp(`"msg":"download resumed","agent":"s3-(mailbox|bidi)","sha256":"${pkg.sha256}","from":[1-9]\\d*`));
  });

  it('signs the URL (SigV4, checked against the specification) for the time asked, under the session\'s MAC, serving exactly the package', async () => {
    const pkg = await release('6.3.1', 0);
    assert.equal((await d.api('POST', '/api/operations', { action: 'propagate', package: pkg.id, servers: [sim.serverId] })).status, 202);
    const answer = await sim.call('GET', packageRoute(pkg.sha256), { session: true, redirect: 'manual' });
    const body = answer.body as { location: string; size: number; expiresInSeconds: number };
    assert.deepEqual([answer.status, answer.signed, answer.headers.get('location'), body.size, body.expiresInSeconds], [307, true, body.location, pkg.size, 60]);
    const check = checkPresignedGet(body.location, S3_SECRET);
    assert.deepEqual([check.valid, check.expiresSeconds, check.credential.split('/').slice(2).join('/')], [true, 60, 'us-east-1/s3/aws4_request']);
    assert.ok(Math.abs(check.signedAt.getTime() - Date.now()) < 60_000);
    // Altered in any part, it no longer carries a valid signature (what S3 checks; s3rver does not).
    const other = 'f'.repeat(64);
    for (const altered of [body.location.replace(pkg.sha256, other), body.location.replace('X-Amz-Expires=60', 'X-Amz-Expires=600000')]) {
      assert.equal(checkPresignedGet(altered, S3_SECRET).valid, false, altered);
    }
    assert.equal(checkPresignedGet(body.location, 'another-secret').valid, false);
    const fetched = await fetch(body.location);
    assert.equal(sha256Of(Buffer.from(await fetched.arrayBuffer())), pkg.sha256);
    const range = await fetch(body.location, { headers: { range: 'bytes=10-19' } });
    assert.deepEqual([range.status, range.headers.get('content-range')], [206, `bytes 10-19/${pkg.size}`]);
  });

  it('refuses an expired URL at the bucket; the agent asks the master again and gets a fresh one', { timeout: 120_000 }, async () => {
    await restartMaster(['--store-presign', '1']);
    const pkg = await release('6.4.0', 0);
    // s3rver checks X-Amz-Date + X-Amz-Expires: a URL used 2.5 s after it was made is refused.
    assert.equal((await d.api('POST', '/api/operations', { action: 'propagate', package: pkg.id, servers: [sim.serverId] })).status, 202);
    const { location } = (await sim.call('GET', packageRoute(pkg.sha256), { session: true, redirect: 'manual' })).body as { location: string };
    await new Promise((r) => setTimeout(r, 2500));
    const expired = await fetch(location);
    assert.equal(expired.status, 403);
    assert.match(await expired.text(), /<Code>AccessDenied<\/Code><Message>Request has expired<\/Message>/);

    const sprung = bucketProxy.sprung;
    bucketProxy.holdNext(new RegExp(`^GET /fleet/packages/${pkg.sha256}\\.pkg\\?.*X-Amz-Signature=`), 2500);
    const targets = await d.ended(await d.operate('propagate', pkg.id, [bidirectional.serverId]));
    assert.deepEqual(targets.map((t) => t.state), ['succeeded'], JSON.stringify(targets));
    assert.equal(bucketProxy.sprung, sprung + 1, 'the first download from the bucket was held');
    assert.match(bidirectional.logs(), new RegExp(`"msg":"download interrupted; will resume","agent":"s3-bidi","sha256":"${pkg.sha256}","attempt":1,"delayMs":\\d+,"have":0,"error":"the package store refused the download the master redirected to \\(403 AccessDenied\\)"`));
  });
});
