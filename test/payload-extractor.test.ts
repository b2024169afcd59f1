import assert from 'node:assert/strict';
import { access, lstat, mkdir, readdir, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { PackageRejectedError, ValidationError } from '../lib/errors.js';
import { extractPayload, type ExtractLimits } from '../lib/payload-extractor.js';
import { verifyPackage } from '../lib/package-verifier.js';
import { loadTrustStore, type TrustStore } from '../lib/trust-store.js';
import { craftTar, makePackage, type CraftEntry } from './helpers/openssl-package.js';
import { tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let trust: TrustStore;
let counter = 0;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
  trust = await loadTrustStore(pki.root);
});
after(() => cleanup());

const exists = (p: string) => access(p).then(() => true, () => false);

/** A valid, signed package whose payload is the crafted tar.gz. */
async function packageWith(entries: CraftEntry[], unpackedSize?: number): Promise<string> {
  const id = `x${++counter}`;
  const payloadFile = await craftTar(path.join(work, `${id}.payload.tar.gz`), entries, true);
  const editManifest = unpackedSize === undefined ? undefined : (m: Record<string, unknown>) => ({ ...m, unpackedSize });
  return makePackage(work, id, { publisher: pki.good.rsa, payloadFile, editManifest });
}

async function extract(file: string, limits: ExtractLimits = {}): Promise<{ dir: string; result?: Awaited<ReturnType<typeof extractPayload>>; error?: Error }> {
  const verified = await verifyPackage(file, { trust });
  const dir = path.join(work, 'releases', `r${++counter}`);
  try {
    return { dir, result: await extractPayload(file, { ...verified.payload, unpackedSize: verified.manifest.unpackedSize }, dir, limits) };
  } catch (err) {
    return { dir, error: err as Error };
  }
}

async function refused(entries: CraftEntry[], message: string | RegExp, options: { unpackedSize?: number; limits?: ExtractLimits } = {}): Promise<void> {
  const { dir, error } = await extract(await packageWith(entries, options.unpackedSize), options.limits);
  assert.ok(error instanceof PackageRejectedError, `expected a rejection, got ${String(error)}`);
  if (typeof message === 'string') assert.equal(error.message, message);
  else assert.match(error.message, message);
  assert.equal(await exists(dir), false, 'the half-written release directory must be removed');
}

describe('payload extraction', () => {
  it('extracts files, folders and modes, dropping setuid bits', async () => {
    const { dir, result, error } = await extract(await packageWith([
      { name: './', type: 'dir', mode: 0o755 },
      { name: './hooks/', type: 'dir', mode: 0o755 },
      { name: './hooks/apply', content: '#!/bin/sh\nexit 0\n', mode: 0o4755 },
      { name: './etc/watchdoc.conf', content: 'release=6.2\n' },
      { name: './lib/libwd.so.1', content: 'ELF' },
      { name: './lib/libwd.so', type: 'symlink', linkname: 'libwd.so.1' },
      { name: './bin/wd-link', type: 'symlink', linkname: '../lib/libwd.so.1' },
      { name: './lib/libwd-hard.so', type: 'hardlink', linkname: './lib/libwd.so.1' },
    ]));
    assert.equal(error, undefined);
    assert.deepEqual(result, { files: 3, directories: 2, links: 3, bytes: 17 + 12 + 3 });
    assert.equal(await readFile(path.join(dir, 'etc/watchdoc.conf'), 'utf8'), 'release=6.2\n');
    assert.equal((await stat(path.join(dir, 'hooks/apply'))).mode & 0o7777, 0o755);
    assert.equal(await readlink(path.join(dir, 'lib/libwd.so')), 'libwd.so.1');
    assert.equal(await readFile(path.join(dir, 'bin/wd-link'), 'utf8'), 'ELF');
    assert.equal((await stat(path.join(dir, 'lib/libwd-hard.so'))).nlink, 2);
  });

  it('refuses names that escape the release directory', async () => {
    await refused([{ name: '../evil', content: 'x' }], 'This update package is corrupt: payload member "../evil" has ".." in its name');
    await refused([{ name: 'a/../../evil', content: 'x' }], 'This update package is corrupt: payload member "a/../../evil" has ".." in its name');
    await refused([{ name: '/tmp/evil', content: 'x' }], 'This update package is corrupt: payload member "/tmp/evil" has an absolute name');
    assert.equal(await exists(path.join(work, 'releases', 'evil')), false);
    assert.equal(await exists(path.join(work, 'evil')), false);
  });

  it('refuses links that point outside', async () => {
    await refused([{ name: 'passwd', type: 'symlink', linkname: '/etc/passwd' }], 'This update package is corrupt: payload member "passwd" is a link to an absolute path (/etc/passwd)');
    await refused([{ name: 'up', type: 'symlink', linkname: '../../outside' }], 'This update package is corrupt: payload member "up" is a link pointing outside the release directory (../../outside)');
    await refused([{ name: 'a/b', type: 'symlink', linkname: '../../x' }], 'This update package is corrupt: payload member "a/b" is a link pointing outside the release directory (../../x)');
    await refused([{ name: 'h', type: 'hardlink', linkname: '../secret' }], 'This update package is corrupt: payload member "h" is a hard link to an unsafe name (../secret)');
    await refused([{ name: 'h', type: 'hardlink', linkname: 'nothere' }], 'This update package is corrupt: payload member "h" is a hard link to "nothere", which is not a file of the payload');
  });

  it('refuses a link that only escapes through another link', async () => {
    // "s" points at the release root, so "s/.." is its parent although it reads as the root itself.
    await refused([
      { name: 's', type: 'symlink', linkname: '.' },
      { name: 'x', type: 'symlink', linkname: 's/..' },
    ], 'This update package is corrupt: payload member "x" is a link pointing outside the release directory (s/..)');
  });

  it('never writes a file through a link', async () => {
    await refused([
      { name: 'd', type: 'symlink', linkname: 'sub' },
      { name: 'd/file', content: 'x' },
    ], 'This update package is corrupt: payload member "d" appears twice');
  });

  it('refuses devices, FIFOs and duplicate files', async () => {
    await refused([{ name: 'tty', type: 'chardev' }], 'This update package is corrupt: payload member "tty" is a device');
    await refused([{ name: 'pipe', type: 'fifo' }], 'This update package is corrupt: payload member "pipe" is a special file (FIFO)');
    await refused([{ name: 'a', content: '1' }, { name: 'a', content: '2' }], 'This update package is corrupt: payload member "a" appears twice');
  });

  it('refuses a payload that is not a tar.gz, and leaves nothing behind', async () => {
    const id = `x${++counter}`;
    const junk = path.join(work, `${id}.junk`);
    await writeFile(junk, 'definitely not gzip, not tar either. '.repeat(40));
    const file = await makePackage(work, id, { publisher: pki.good.rsa, payloadFile: junk });
    const { dir, error } = await extract(file);
    assert.match(String(error?.message), /^This update package is corrupt: payload: the file is not a tar or tar\.gz archive \(.+\)$/);
    assert.equal(await exists(dir), false);
  });

  it('catches a package file swapped after it was verified', async () => {
    const first = await packageWith([{ name: 'a.txt', content: 'one' }]);
    const second = await packageWith([{ name: 'a.txt', content: 'two' }]);
    const verified = await verifyPackage(first, { trust });
    const dir = path.join(work, 'releases', 'swapped');
    await assert.rejects(extractPayload(second, verified.payload, dir), {
      message: 'This update package is corrupt: payload checksum does not match the manifest (the package file changed after it was verified)',
    });
    assert.equal(await exists(dir), false);
  });

  it('refuses a payload that unpacks to more than 10 times its size, stopping at the first file too large', async () => {
    const bomb: CraftEntry[] = [{ name: 'small.txt', content: 'fine' }, { name: 'zeros.bin', content: 'a'.repeat(8 * 1024 * 1024) }];
    const file = await packageWith(bomb);
    const { size } = (await verifyPackage(file, { trust })).payload;
    const releases = path.join(work, 'releases');
    await mkdir(releases, { recursive: true });
    const before = await readdir(releases);
    const { dir, error } = await extract(file);
    assert.equal(error?.message, `This update package is corrupt: the payload unpacks to more than ${10 * size} bytes, 10 times its compressed size; the manifest declares no unpackedSize`);
    assert.equal(await exists(dir), false, 'nothing is left of the release');
    assert.deepEqual(await readdir(releases), before);
    // An administrator who expects such payloads raises the ratio.
    const raised = await extract(file, { maxRatio: 10_000 });
    assert.equal(raised.error, undefined);
    assert.equal(raised.result?.bytes, 4 + 8 * 1024 * 1024);
  });

  it('holds a payload to its declared unpackedSize', async () => {
    const entries: CraftEntry[] = [{ name: 'a.txt', content: 'x'.repeat(600) }, { name: 'b.txt', content: 'y'.repeat(600) }];
    await refused(entries, 'This update package is corrupt: the payload unpacks to more than 1000 bytes (its declared unpackedSize)', { unpackedSize: 1000 });
    const exact = await extract(await packageWith(entries, 1200));
    assert.equal(exact.result?.bytes, 1200);
    // Declared, the size wins over the ratio: a payload of repeated bytes unpacks far beyond 10 times.
    const declared = await extract(await packageWith([{ name: 'big.txt', content: 'z'.repeat(1024 * 1024) }], 1024 * 1024));
    assert.equal(declared.result?.bytes, 1024 * 1024);
  });

  it('refuses a payload with more entries than allowed, so inodes cannot run out either', async () => {
    const many: CraftEntry[] = Array.from({ length: 6 }, (_, i) => ({ name: `f${i}`, content: '' }));
    await refused(many, 'This update package is corrupt: the payload holds more than 5 entries', { limits: { maxEntries: 5 } });
    assert.equal((await extract(await packageWith(many.slice(0, 5)), { maxEntries: 5 })).result?.files, 5);
  });

  it('refuses data after the end of the payload\'s archive', async () => {
    const id = `x${++counter}`;
    const inner = await craftTar(path.join(work, `${id}.inner.tar`), [{ name: 'a.txt', content: 'one' }]);
    const hidden = await craftTar(path.join(work, `${id}.hidden.tar`), [{ name: 'hooks/apply', content: '#!/bin/sh\nexit 0\n', mode: 0o755 }]);
    const payloadFile = path.join(work, `${id}.payload.tar.gz`);
    await writeFile(payloadFile, gzipSync(Buffer.concat([await readFile(inner), await readFile(hidden)])));
    const { dir, error } = await extract(await makePackage(work, id, { publisher: pki.good.rsa, payloadFile }));
    assert.equal(error?.message, 'This update package is corrupt: payload: data after the end of the archive');
    assert.equal(await exists(dir), false);
  });

  it('refuses an entry that only one tar reader would see', async () => {
    // python reads the block after a link as the next header; node-tar skipped it as the link's data
    await refused([{ name: 'l', type: 'symlink', linkname: 'target', size: 100 }, { name: 'after', content: 'x' }],
      'This update package is corrupt: payload: member "l" (SymbolicLink) claims 100 bytes of data, which only a file may have');
    await refused([{ name: 'a', content: 'x', pax: { comment: 'c'.repeat(70_000) } }],
      'This update package is corrupt: payload: an extended header of 70015 bytes (at most 65536)');
  });

  it('refuses to reuse an existing release directory', async () => {
    const file = await packageWith([{ name: 'a.txt', content: 'one' }]);
    const verified = await verifyPackage(file, { trust });
    const dir = path.join(work, 'releases', 'taken');
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'keep.txt'), 'mine');
    await assert.rejects(extractPayload(file, verified.payload, dir), (err: Error) => err instanceof ValidationError && /already exists/.test(err.message));
    assert.equal(await readFile(path.join(dir, 'keep.txt'), 'utf8'), 'mine');
    assert.equal((await lstat(dir)).isDirectory(), true);
  });
});
