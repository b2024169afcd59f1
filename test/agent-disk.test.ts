import assert from 'node:assert/strict';
import { mkdir, readdir, rm, stat, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { formatBytes } from '../lib/bytes.js';
import { waitFor } from './helpers/master-process.js';
import { makePackage } from './helpers/openssl-package.js';
import { openProcessDomain, type ProcessDomain } from './helpers/process-domain.js';
import { makeZerosPayload } from './helpers/random-payload.js';
import { makeRelease } from './helpers/releases.js';
import { run } from './helpers/run.js';
import { startThrottlingProxy, type ThrottlingProxy } from './helpers/throttling-proxy.js';

// A print server whose agent's disk is full: each agent's data folder is a small tmpfs of its own,
// the master and the agents are real processes, packages travel over loopback.

const TOKEN = 'disk-enrollment-token-0123456789';
const SIZE = /(\d+(\.\d)? (bytes|KiB|MiB))/.source;

let d: ProcessDomain;
let canMount: string | null = null;
const mounts: string[] = [];
const proxies: ThrottlingProxy[] = [];

before(async () => {
  d = await openProcessDomain(TOKEN);
  await d.startMaster();
  canMount = process.getuid?.() === 0 ? await tryMount(path.join(d.work, 'probe'), '1m') : 'needs root to mount a tmpfs';
});

after(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  await Promise.all(d.agents.map((a) => a.stop('SIGKILL')));
  for (const dir of mounts) await run('umount', ['-l', dir]);
  await d.close();
});

/** null once mounted; otherwise why not. */
async function tryMount(dir: string, size: string): Promise<string | null> {
  await mkdir(dir, { recursive: true });
  const result = await run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  if (result.code !== 0) return `cannot mount a tmpfs (${result.stderr.trim()})`;
  mounts.push(dir);
  return null;
}

/** A data folder on a tmpfs of its own; null (and the test skipped) when that cannot be had. */
async function smallDisk(t: TestContext, name: string, size = '3m'): Promise<string | null> {
  const why = canMount ?? await tryMount(path.join(d.work, name), size);
  if (why) {
    t.skip(why);
    return null;
  }
  return path.join(d.work, name);
}

const free = async (dir: string) => {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
};

/** Fills a file system to its last byte. */
async function fill(file: string): Promise<void> {
  await writeFile(file, Buffer.alloc(await free(path.dirname(file)) + 1024 * 1024)).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOSPC') throw err;
  });
  assert.equal(await free(path.dirname(file)), 0);
}

const staging = (data: string) => readdir(path.join(data, 'staging'));

describe('an agent whose disk is full', () => {
  it('refuses a package larger than its free space before downloading it, and stages the next one that fits', async (t) => {
    const data = await smallDisk(t, 'disk-precheck');
    if (!data) return;
    const proxy = await startThrottlingProxy(d.port, { match: /^GET \/api\/agent\/packages\//, bytesPerSecond: Infinity });
    proxies.push(proxy);
    const agent = await d.startAgent('disk-precheck', 'mailbox', data, [], {}, proxy.url);
    const big = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.2.0', { padding: 4 * 1024 * 1024 }), 'big 6.2.0');
    const [refused] = await d.ended(await d.operate('propagate', big.id, [agent.serverId]), 30_000);
    assert.equal(refused?.state, 'failed');
    const message = new RegExp(`^not enough disk space on disk-precheck: needs ${formatBytes(big.size).replace('.', '\\.')}, has ${SIZE}$`).exec(refused?.message ?? '');
    assert.ok(message, refused?.message);
    assert.deepEqual(proxy.requests.filter((r) => r.startsWith('GET /api/agent/packages/')), [], 'nothing was downloaded');
    assert.deepEqual(await staging(data), []);

    const small = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.2.1'), 'small 6.2.1');
    const [staged] = await d.ended(await d.operate('propagate', small.id, [agent.serverId]), 30_000);
    assert.deepEqual([staged?.state, staged?.message], ['succeeded', 'staged watchdoc 6.2.1']);
  });

  it('stops at once when the disk fills during the download, keeps no partial file, and works again once space is freed', async (t) => {
    const data = await smallDisk(t, 'disk-midway');
    if (!data) return;
    const proxy = await startThrottlingProxy(d.port, { match: /^GET \/api\/agent\/packages\//, bytesPerSecond: 256 * 1024 });
    proxies.push(proxy);
    const agent = await d.startAgent('disk-midway', 'mailbox', data, [], {}, proxy.url);
    // 2 MiB fit in the 3 MiB disk when the download starts; then another file takes the rest.
    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.3.0', { padding: 2 * 1024 * 1024 }), 'midway 6.3.0');
    const operation = await d.operate('propagate', pkg.id, [agent.serverId]);
    const part = path.join(data, 'staging', `${pkg.sha256}.part`);
    await waitFor(async () => ((await stat(part).catch(() => null))?.size ?? 0) >= 256 * 1024, 30_000, 'the download to be under way');
    const filler = path.join(data, 'filler.bin');
    await fill(filler);
    const [target] = await d.ended(operation, 30_000);
    assert.equal(target?.state, 'failed');
    assert.match(target?.message ?? '', new RegExp(`^not enough disk space on disk-midway: needs ${formatBytes(pkg.size).replace('.', '\\.')}, has ${SIZE}$`));
    assert.deepEqual(await staging(data), [], 'the partial file was removed');
    assert.equal(proxy.requests.filter((r) => r.startsWith('GET /api/agent/packages/')).length, 1, 'not retried as if the network had failed');
    assert.doesNotMatch(agent.logs(), /download interrupted; will resume/);

    await rm(filler);
    proxy.bytesPerSecond = Infinity;
    const [again] = await d.ended(await d.operate('propagate', pkg.id, [agent.serverId]), 30_000);
    assert.deepEqual([again?.state, again?.message], ['succeeded', 'staged watchdoc 6.3.0']);
  });

  it('reports the failure of a command that arrives on a full disk, though it cannot write its records, and runs the next once space is freed', async (t) => {
    const mailboxData = await smallDisk(t, 'disk-full-mailbox');
    const bidiData = mailboxData && await smallDisk(t, 'disk-full-bidi');
    if (!mailboxData || !bidiData) return;
    const mailbox = await d.startAgent('full-mailbox', 'mailbox', mailboxData);
    const bidi = await d.startAgent('full-bidi', 'bidirectional', bidiData);
    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.4.0'), 'full 6.4.0');
    for (const data of [mailboxData, bidiData]) await fill(path.join(data, 'filler.bin'));
    const targets = await d.ended(await d.operate('propagate', pkg.id, [mailbox.serverId, bidi.serverId]), 30_000);
    for (const [name, target] of [['full-mailbox', targets.find((x) => x.serverId === mailbox.serverId)], ['full-bidi', targets.find((x) => x.serverId === bidi.serverId)]] as const) {
      assert.equal(target?.state, 'failed', name);
      assert.equal(target?.message, `not enough disk space on ${name}: needs ${formatBytes(pkg.size)}, has 0 bytes`);
    }
    for (const data of [mailboxData, bidiData]) {
      assert.deepEqual(await staging(data), []);
      assert.deepEqual((await readdir(path.join(data, 'commands'))).filter((f) => f.endsWith('.tmp')), [], 'no half-written record left');
      await rm(path.join(data, 'filler.bin'));
    }
    const done = await d.ended(await d.operate('propagate', pkg.id, [mailbox.serverId, bidi.serverId]), 30_000);
    assert.deepEqual(done.map((x) => [x.state, x.message]), [['succeeded', 'staged watchdoc 6.4.0'], ['succeeded', 'staged watchdoc 6.4.0']]);
  });

  it('says so when the disk of its staging folder turned read-only, and works again once it is writable', async (t) => {
    const data = await smallDisk(t, 'disk-readonly');
    if (!data) return;
    const agent = await d.startAgent('disk-readonly', 'mailbox', data);
    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.4.5'), 'readonly 6.4.5');
    // The agent holds files open for writing in its data folder, which a read-only remount refuses:
    // the staging folder alone is made read-only, through a bind mount onto itself.
    const dir = path.join(data, 'staging');
    const bound = await run('mount', ['--bind', dir, dir]);
    const readOnly = bound.code === 0 ? await run('mount', ['-o', 'remount,bind,ro', dir]) : bound;
    if (readOnly.code !== 0) {
      if (bound.code === 0) await run('umount', [dir]);
      t.skip(`cannot make a folder read-only with a bind mount (${readOnly.stderr.trim()})`);
      return;
    }
    try {
      const [target] = await d.ended(await d.operate('propagate', pkg.id, [agent.serverId]), 30_000);
      assert.deepEqual([target?.state, target?.message], ['failed', 'cannot write on disk-readonly: the disk of its data folder is read-only (EROFS)']);
    } finally {
      await run('umount', [dir]);
    }
    assert.deepEqual(await staging(data), []);
    const [again] = await d.ended(await d.operate('propagate', pkg.id, [agent.serverId]), 30_000);
    assert.deepEqual([again?.state, again?.message], ['succeeded', 'staged watchdoc 6.4.5']);
  });

  it('fails an install that fills the disk with the sizes, and leaves no half-extracted release', async (t) => {
    const data = await smallDisk(t, 'disk-extract');
    if (!data) return;
    // 6 MiB of zeros in a few KiB, without a declared unpackedSize: the free space looks ample.
    const agent = await d.startAgent('disk-extract', 'mailbox', data, [], { PROPAGATOR_MAX_UNPACK_RATIO: '5000' });
    const payloadFile = await makeZerosPayload(path.join(d.work, 'zeros.payload.tar.gz'), 6 * 1024 * 1024);
    const pkg = await d.upload(await makePackage(d.work, 'zeros', { publisher: d.pki.good.rsa, payloadFile, version: '6.5.0' }), 'zeros 6.5.0');
    const [target] = await d.ended(await d.operate('apply', pkg.id, [agent.serverId]), 30_000);
    assert.equal(target?.state, 'failed');
    assert.match(target?.message ?? '', new RegExp(`^not enough disk space on disk-extract: needs more than ${SIZE}, has ${SIZE}$`));
    assert.equal(target?.versionAfter, '6.1.0');
    assert.deepEqual(await readdir(path.join(data, 'releases')), [], 'no release, no .partial folder');

    const good = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.5.1'), 'good 6.5.1');
    const [applied] = await d.ended(await d.operate('apply', good.id, [agent.serverId]), 30_000);
    assert.deepEqual([applied?.state, applied?.message, applied?.versionAfter], ['succeeded', 'installed watchdoc 6.5.1', '6.5.1']);
  });
});
