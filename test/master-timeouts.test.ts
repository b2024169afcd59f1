import assert from 'node:assert/strict';
import { openAsBlob } from 'node:fs';
import { readdir, readlink } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ADMIN_PASSWORD, BASIC } from './helpers/master.js';
import { startMasterProcess, waitFor, type MasterProcess } from './helpers/master-process.js';
import { makePackage } from './helpers/openssl-package.js';
import { makeRandomPayload } from './helpers/random-payload.js';
import { SimulatedAgent } from './helpers/simulated-agent.js';
import { tempDir } from './helpers/run.js';
import { createTestPki } from './helpers/test-pki.js';

const IDLE_SECONDS = 2;
const ENROLL_TOKEN = 'timeouts-test-enrollment-token-0123456789';
/** Far above every timeout under test, far below the old code's (60 s, or none). */
const CUT_WITHIN_MS = 15_000;

let work: string;
let cleanup: () => Promise<void>;
let master: MasterProcess;
let bigPackage: { id: number; sha256: string; size: number };

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  const pki = await createTestPki(path.join(work, 'pki'));
  // Larger than what the loopback socket buffers hold, so a client that stops reading stalls the master.
  const payloadFile = await makeRandomPayload(path.join(work, 'payload.tar.gz'), 64 * 1024 ** 2);
  const file = await makePackage(work, 'big', { publisher: pki.good.rsa, payloadFile });
  master = await startMasterProcess(['--data', path.join(work, 'data'), '--trust', pki.root, '--product-version', '9.0.0', '--auto-accept'], {
    PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD,
    PROPAGATOR_ENROLL_TOKEN: ENROLL_TOKEN,
    PROPAGATOR_UPLOAD_IDLE_TIMEOUT: String(IDLE_SECONDS),
    PROPAGATOR_SEND_IDLE_TIMEOUT: String(IDLE_SECONDS),
  });
  const form = new FormData();
  form.set('name', 'Big');
  form.set('package', await openAsBlob(file), 'big.pkg');
  const res = await fetch(`${master.url}/api/packages`, { method: 'POST', headers: { authorization: BASIC }, body: form });
  assert.equal(res.status, 201, await res.clone().text());
  bigPackage = (await res.json()) as { id: number; sha256: string; size: number };
});
after(async () => {
  await master?.stop('SIGKILL');
  await cleanup();
});

/**
 * The credentials of an agent allowed to download the package: enrolled through the API, then
 * given the package by a propagate operation. The agent API is being redesigned: adapt this only.
 */
/** The headers of a download by an agent the package is assigned to (its session, a MAC'd call). */
async function agentDownloadHeaders(packageId: number, sha256: string): Promise<Record<string, string>> {
  const agent = await new SimulatedAgent(master.url, 'slow-reader').join(ENROLL_TOKEN);
  const operation = await fetch(`${master.url}/api/operations`, {
    method: 'POST',
    headers: { authorization: BASIC, 'content-type': 'application/json' },
    body: JSON.stringify({ action: 'propagate', package: packageId, servers: [agent.serverId] }),
  });
  assert.equal(operation.status, 202, await operation.clone().text());
  return agent.sessionHeaders('GET', `/api/agent/packages/${sha256}`);
}

/** A raw connection to the master, with what it received and when it was closed. */
function connect(): Promise<{ socket: net.Socket; received: () => string; closed: Promise<number> }> {
  const { hostname, port } = new URL(master.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname);
    let received = '';
    socket.on('data', (c: Buffer) => (received += c.toString()));
    socket.on('error', () => undefined);
    const opened = Date.now();
    const closed = new Promise<number>((r) => socket.on('close', () => r(Date.now() - opened)));
    socket.once('connect', () => resolve({ socket, received: () => received, closed }));
    socket.once('error', reject);
  });
}

/** Milliseconds until `closed` settles, or null if still open after CUT_WITHIN_MS. */
function closedWithin(closed: Promise<number>): Promise<number | null> {
  return Promise.race([closed, new Promise<null>((r) => setTimeout(() => r(null), CUT_WITHIN_MS))]);
}

/** Names of the package files the master process holds open. */
async function openPackageFiles(): Promise<string[]> {
  const fdDir = `/proc/${master.child.pid}/fd`;
  const links = await Promise.all((await readdir(fdDir)).map((fd) => readlink(path.join(fdDir, fd)).catch(() => '')));
  return links.filter((l) => l.endsWith('.pkg'));
}

describe('HTTP timeouts of a real master process', () => {
  it('cuts a client that never finishes its headers', { timeout: 60_000 }, async () => {
    const silent = await connect();
    const trickling = await connect();
    trickling.socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
    const drip = setInterval(() => trickling.socket.write('x'), 200);
    try {
      const [silentMs, tricklingMs] = await Promise.all([closedWithin(silent.closed), closedWithin(trickling.closed)]);
      assert.ok(silentMs !== null, 'a connection that sends nothing stays open');
      assert.ok(tricklingMs !== null, 'a connection whose headers never end stays open');
      assert.ok(tricklingMs >= IDLE_SECONDS * 1000 - 100, `cut after ${tricklingMs} ms, before the headers timeout`);
      assert.match(trickling.received(), /^HTTP\/1\.1 408 Request Timeout\r\n/);
    } finally {
      clearInterval(drip);
      silent.socket.destroy();
      trickling.socket.destroy();
    }
  });

  it('cuts a request body that trickles in, before any login is checked', { timeout: 60_000 }, async () => {
    const client = await connect();
    client.socket.write('POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nusername=');
    const drip = setInterval(() => client.socket.write('a'), 200);
    try {
      const ms = await closedWithin(client.closed);
      assert.ok(ms !== null, 'a request body sent a byte at a time keeps its connection');
      const answer = client.received();
      assert.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n/);
      assert.ok(answer.endsWith(`\r\n\r\n{"error":"The request did not arrive whole within ${IDLE_SECONDS} s; send it again"}`), answer);
      assert.match(master.stdout(), /"level":"warn","msg":"request too slow to arrive: connection closed","method":"POST","path":"\/login"/);
    } finally {
      clearInterval(drip);
      client.socket.destroy();
    }
  });

  it('closes a package download that its client stopped reading, and releases the file', { timeout: 60_000 }, async () => {
    const headers = await agentDownloadHeaders(bigPackage.id, bigPackage.sha256);
    const request = http.get(`${master.url}/api/agent/packages/${bigPackage.sha256}`, { headers });
    request.on('error', () => undefined);
    const response = await new Promise<http.IncomingMessage>((resolve) => request.on('response', resolve));
    assert.equal(response.statusCode, 200);
    assert.equal(Number(response.headers['content-length']), bigPackage.size);
    let received = 0;
    await new Promise<void>((resolve) => response.once('data', (c: Buffer) => {
      received += c.length;
      response.pause();
      resolve();
    }));
    const paused = Date.now();
    await waitFor(async () => (await openPackageFiles()).length === 1, 5_000, 'the master to hold the package file open');
    // A paused client does not read its socket, so it sees the cut only when it reads again: the
    // master's side tells when. The file closes with the connection.
    await waitFor(async () => (await openPackageFiles()).length === 0, CUT_WITHIN_MS, 'the master to cut the download');
    const ms = Date.now() - paused;
    assert.ok(ms >= IDLE_SECONDS * 1000 - 100, `cut after ${ms} ms, before the idle timeout`);
    assert.match(master.stdout(), /"level":"warn","msg":"download stalled: connection closed","method":"GET","path":"\/api\/agent\/packages\/[0-9a-f]{64}","sentBytes":\d+,"seconds":2\}/);
    const ended = await new Promise<string>((resolve) => {
      response.on('data', (c: Buffer) => (received += c.length));
      response.on('end', () => resolve('end'));
      response.on('error', (err) => resolve(err.message));
      response.resume();
    });
    assert.equal(ended, 'aborted');
    assert.ok(received < bigPackage.size, `the download was cut short (${received} of ${bigPackage.size} bytes)`);
    assert.equal((await fetch(`${master.url}/health`)).status, 200);
  });
});
