import assert from 'node:assert/strict';
import { openAsBlob } from 'node:fs';
import { readdir, readlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadMasterConfig } from '../server/config.js';
import { ADMIN_PASSWORD, BASIC } from './helpers/master.js';
import { startMasterProcess, waitFor, type MasterProcess } from './helpers/master-process.js';
import { makePackage } from './helpers/openssl-package.js';
import { makeRandomPayload } from './helpers/random-payload.js';
import { SimulatedAgent } from './helpers/simulated-agent.js';
import { tempDir } from './helpers/run.js';
import { createTestPki } from './helpers/test-pki.js';

/** The send idle timeout under test; the upload (and connection) idle timeout stays at its 60 s. */
const SEND_IDLE_SECONDS = 3;
const ENROLL_TOKEN = 'send-timeout-test-enrollment-token-0123456789';
/** Far above the send timeout, far below the connection idle timeout (60 s) that held it before. */
const CUT_WITHIN_MS = 20_000;

let work: string;
let cleanup: () => Promise<void>;
let master: MasterProcess;
let agent: SimulatedAgent;
let bigPackage: { id: number; sha256: string; size: number };

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  const pki = await createTestPki(path.join(work, 'pki'));
  // Much larger than what the loopback socket buffers hold, so a client that stops reading stalls the master.
  const payloadFile = await makeRandomPayload(path.join(work, 'payload.tar.gz'), 64 * 1024 ** 2);
  const file = await makePackage(work, 'big', { publisher: pki.good.rsa, payloadFile });
  master = await startMasterProcess(['--data', path.join(work, 'data'), '--trust', pki.root, '--product-version', '9.0.0', '--auto-accept'], {
    PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD,
    PROPAGATOR_ENROLL_TOKEN: ENROLL_TOKEN,
    // The environment rather than the flag: a master that does not know it still starts, and shows the fault.
    PROPAGATOR_SEND_IDLE_TIMEOUT: String(SEND_IDLE_SECONDS),
  });
  const form = new FormData();
  form.set('name', 'Big');
  form.set('package', await openAsBlob(file), 'big.pkg');
  const res = await fetch(`${master.url}/api/packages`, { method: 'POST', headers: { authorization: BASIC }, body: form });
  assert.equal(res.status, 201, await res.clone().text());
  bigPackage = (await res.json()) as { id: number; sha256: string; size: number };
  // A real agent (its own key, enrolled, in a session) that the package is propagated to.
  agent = await new SimulatedAgent(master.url, 'stalled-reader').join(ENROLL_TOKEN);
  const operation = await fetch(`${master.url}/api/operations`, {
    method: 'POST',
    headers: { authorization: BASIC, 'content-type': 'application/json' },
    body: JSON.stringify({ action: 'propagate', package: bigPackage.id, servers: [agent.serverId] }),
  });
  assert.equal(operation.status, 202, await operation.clone().text());
});
after(async () => {
  await master?.stop('SIGKILL');
  await cleanup();
});

/** How many descriptors of the master process point to the package file. */
async function packageDescriptors(): Promise<number> {
  const fdDir = `/proc/${master.child.pid}/fd`;
  const links = await Promise.all((await readdir(fdDir)).map((fd) => readlink(path.join(fdDir, fd)).catch(() => '')));
  return links.filter((l) => l.endsWith(`${bigPackage.sha256}.pkg`)).length;
}

/**
 * A raw TCP download of the package, as an agent makes it; the test reads its socket as it likes.
 * With `pauses`, the client stops reading for that long after every so many bytes.
 */
async function rawDownload(pauses?: { every: number; ms: number }): Promise<{ socket: net.Socket; received: () => number; head: () => string; closed: Promise<void>; paused: () => number }> {
  const route = `/api/agent/packages/${bigPackage.sha256}`;
  const headers = Object.entries(agent.sessionHeaders('GET', route)).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  const { hostname, port } = new URL(master.url);
  const socket = net.connect(Number(port), hostname);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let head = '';
  let received = 0;
  let paused = 0;
  let nextPause = pauses?.every ?? Infinity;
  socket.on('data', (c: Buffer) => {
    if (head.length < 4096) head += c.subarray(0, 4096).toString('latin1');
    received += c.length;
    if (!pauses || received < nextPause || received >= bigPackage.size) return;
    nextPause = received + pauses.every;
    paused++;
    socket.pause();
    setTimeout(() => socket.resume(), pauses.ms);
  });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.write(`GET ${route} HTTP/1.1\r\nHost: ${hostname}:${port}\r\n${headers}\r\n`);
  await waitFor(async () => received > 0, 10_000, 'the first bytes of the download');
  assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(head, new RegExp(`\r\nContent-Length: ${bigPackage.size}\r\n`, 'i'));
  return { socket, received: () => received, head: () => head, closed, paused: () => paused };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the send idle timeout of package downloads (a real master process)', () => {
  it('closes a download whose client stops reading after --send-idle-timeout, and releases the package file', { timeout: 90_000 }, async () => {
    const download = await rawDownload();
    download.socket.pause();
    const paused = Date.now();
    await waitFor(async () => (await packageDescriptors()) === 1, 5_000, 'the master to hold the package file open');
    // Before: the connection's idle timeout (60 s by default, --upload-idle-timeout) held it.
    await waitFor(async () => (await packageDescriptors()) === 0, CUT_WITHIN_MS, 'the master to close the package file');
    const ms = Date.now() - paused;
    assert.ok(ms >= SEND_IDLE_SECONDS * 1000 - 100, `closed after ${ms} ms, before the send idle timeout`);
    assert.match(master.stdout(), new RegExp(`"level":"warn","msg":"download stalled: connection closed","method":"GET","path":"/api/agent/packages/${bigPackage.sha256}","sentBytes":\\d+,"seconds":${SEND_IDLE_SECONDS}\\}`));
    // The master hung up: a client that reads again gets the rest of the buffers, then the end.
    download.socket.resume();
    await Promise.race([download.closed, sleep(10_000).then(() => assert.fail('the connection is still open'))]);
    assert.ok(download.received() < bigPackage.size, `the download was cut short (${download.received()} of ${bigPackage.size} bytes)`);
    assert.equal((await fetch(`${master.url}/health`)).status, 200);
  });

  it('lets a slow client that keeps taking data finish, pauses shorter than the timeout included', { timeout: 90_000 }, async () => {
    // A pause of a third of the timeout after every 8 MiB taken: the master's buffers fill each
    // time, and drain after. (The master sees progress a 1 MiB chunk at a time: a client must take
    // at least that much per timeout.)
    const download = await rawDownload({ every: 8 * 1024 ** 2, ms: (SEND_IDLE_SECONDS * 1000) / 3 });
    const whole = () => download.received() >= download.head().indexOf('\r\n\r\n') + 4 + bigPackage.size;
    await Promise.race([
      waitFor(async () => whole(), 60_000, 'the whole package'),
      download.closed.then(() => {
        if (!whole()) assert.fail(`the master closed the download after ${download.received()} bytes: ${master.stdout().split('\n').filter((l) => /"warn"/.test(l)).join('\n')}`);
      }),
    ]);
    assert.ok(download.paused() >= 5, `${download.paused()} pauses`);
    const headLength = download.head().indexOf('\r\n\r\n') + 4;
    assert.equal(download.received() - headLength, bigPackage.size);
    download.socket.destroy();
    await waitFor(async () => (await packageDescriptors()) === 0, 5_000, 'the package file to close');
  });
});

describe('--send-idle-timeout', () => {
  it('is 60 s unless the flag or PROPAGATOR_SEND_IDLE_TIMEOUT says otherwise, apart from the upload idle timeout', () => {
    const defaults = loadMasterConfig([], {});
    assert.deepEqual([defaults.sendIdleTimeoutMs, defaults.idleTimeoutMs], [60_000, 60_000]);
    assert.deepEqual([loadMasterConfig([], { PROPAGATOR_SEND_IDLE_TIMEOUT: '300' }).sendIdleTimeoutMs, loadMasterConfig([], { PROPAGATOR_SEND_IDLE_TIMEOUT: '300' }).idleTimeoutMs], [300_000, 60_000]);
    assert.equal(loadMasterConfig(['--send-idle-timeout', '2.5'], { PROPAGATOR_SEND_IDLE_TIMEOUT: '300' }).sendIdleTimeoutMs, 2_500);
    assert.equal(loadMasterConfig(['--upload-idle-timeout', '5'], {}).sendIdleTimeoutMs, 60_000);
  });

  it('refuses a value that is not a positive number of seconds', () => {
    assert.throws(() => loadMasterConfig(['--send-idle-timeout', '0'], {}), { message: 'the send idle timeout must be more than 0 seconds' });
    assert.throws(() => loadMasterConfig(['--send-idle-timeout=-5'], {}), { message: 'the send idle timeout must be more than 0 seconds' });
    assert.throws(() => loadMasterConfig(['--send-idle-timeout', 'soon'], {}), { message: 'the send idle timeout must be a number of seconds' });
    assert.throws(() => loadMasterConfig([], { PROPAGATOR_SEND_IDLE_TIMEOUT: 'never' }), { message: 'the send idle timeout must be a number of seconds' });
  });
});
