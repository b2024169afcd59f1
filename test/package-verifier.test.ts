import assert from 'node:assert/strict';
import { appendFile, copyFile, mkdir, readFile, rm, symlink, writeFile, link } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PackageRejectedError } from '../lib/errors.js';
import { verifyPackage } from '../lib/package-verifier.js';
import { loadTrustStore, type TrustStore } from '../lib/trust-store.js';
import { craftTar, makePackage, MEMBERS, packStage, signStage, stagePackage, type StageOptions } from './helpers/openssl-package.js';
import { must, tempDir } from './helpers/run.js';
import { createEkuPki, createTestPki, type EkuPki, type TestPki } from './helpers/test-pki.js';

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
  await mkdir(path.join(payloadDir, 'hooks'), { recursive: true });
  await writeFile(path.join(payloadDir, 'watchdoc.conf'), 'release=6.1.2\n');
  await writeFile(path.join(payloadDir, 'hooks', 'apply'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
});
after(() => cleanup());

const name = () => `p${++counter}`;
const good = (extra: Partial<StageOptions> = {}): StageOptions => ({ publisher: pki.good.rsa, payloadDir, ...extra });

async function rejection(file: string, t: TrustStore = trust): Promise<string> {
  try {
    await verifyPackage(file, { trust: t });
  } catch (err) {
    assert.ok(err instanceof PackageRejectedError, `expected a PackageRejectedError, got ${String(err)}`);
    return err.message;
  }
  assert.fail(`${path.basename(file)} was accepted`);
}

/** Stages a good package, lets the test break it, then packs it with GNU tar. */
async function broken(edit: (stage: string) => Promise<void>, pack: { gzip?: boolean; members?: string[]; tarArgs?: string[] } = {}): Promise<string> {
  const id = name();
  const stage = await stagePackage(path.join(work, `${id}.stage`), good());
  await edit(stage);
  return packStage(stage, path.join(work, `${id}.pkg`), pack);
}

describe('valid packages built with openssl alone', () => {
  it('accepts an RSA publisher and reports what it verified', async () => {
    const file = await makePackage(work, name(), good());
    const stagePayload = path.join(work, `p${counter}.stage`, 'payload.tar.gz');
    const [sha256] = (await must('sha256sum', [stagePayload])).split(' ');
    const result = await verifyPackage(file, { trust });
    assert.equal(result.manifest.product, 'watchdoc');
    assert.equal(result.manifest.version, '6.1.2');
    assert.equal(result.signer.subject, 'CN=Test Publisher signer');
    assert.deepEqual(result.chain.map((c) => c.subject), ['CN=Test Publisher signer', 'CN=Test Update Intermediate CA', 'CN=Test Update Root CA']);
    assert.equal(result.payload.sha256, sha256);
    assert.equal(result.payload.size, (await readFile(stagePayload)).length);
  });

  it('accepts a gzipped container (detected by magic bytes, whatever the name)', async () => {
    const file = await makePackage(work, name(), { ...good(), gzip: true });
    assert.equal((await readFile(file)).subarray(0, 2).toString('hex'), '1f8b');
    assert.equal((await verifyPackage(file, { trust })).manifest.version, '6.1.2');
  });

  it('accepts ECDSA P-256 and P-384 publishers', async () => {
    for (const publisher of [pki.good.ecP256, pki.good.ecP384]) {
      const file = await makePackage(work, name(), good({ publisher }));
      assert.match((await verifyPackage(file, { trust })).signer.subject, /ec-p(256|384)/);
    }
  });

  it('accepts an RSA-PSS manifest signature', async () => {
    const file = await broken((stage) => signStage(stage, pki.good.rsa.key, ['-sigopt', 'rsa_padding_mode:pss']));
    assert.equal((await verifyPackage(file, { trust })).manifest.product, 'watchdoc');
  });

  it('tolerates a leading ./ on member names', async () => {
    const file = await broken(async () => undefined, { members: MEMBERS.map((m) => `./${m}`) });
    assert.equal((await verifyPackage(file, { trust })).manifest.version, '6.1.2');
  });

  it('accepts a package that expires in the future, and a trust store folder', async () => {
    const file = await makePackage(work, name(), good({ expires: '2099-01-01T00:00:00Z' }));
    const folder = path.join(work, 'trust-folder');
    await mkdir(folder, { recursive: true });
    await copyFile(pki.otherRoot, path.join(folder, 'a-other.pem'));
    await copyFile(pki.root, path.join(folder, 'b-root.crt'));
    await writeFile(path.join(folder, 'README.txt'), 'not a certificate');
    const result = await verifyPackage(file, { trust: await loadTrustStore(folder) });
    assert.equal(result.manifest.expires, '2099-01-01T00:00:00Z');
  });
});

describe('publishers that must be refused', () => {
  const expected: [keyof TestPki['bad'], string][] = [
    ['expired', 'This update package is not secure: the signer certificate has expired (2021-01-01)'],
    ['notyet', 'This update package is not secure: the signer certificate is not valid yet (valid from 2099-01-01)'],
    ['selfsigned', 'This update package is not secure: the signer certificate "CN=Test Publisher selfsigned" is self-signed and not in the trust store'],
    ['weak1024', 'This update package is not secure: the signer certificate has a 1024-bit RSA key (at least 2048 bits required)'],
    ['sha1', 'This update package is not secure: the signer certificate is signed with SHA-1 (sha1WithRSAEncryption); SHA-256 or stronger is required'],
    ['md5', 'This update package is not secure: the signer certificate is signed with MD5 (md5WithRSAEncryption); SHA-256 or stronger is required'],
    ['noeku', 'This update package is not secure: the signer certificate is not a code-signing certificate (no codeSigning extended key usage)'],
    ['nodigsig', 'This update package is not secure: the signer certificate does not allow digitalSignature (key usage)'],
    ['nochain', 'This update package is not secure: the certificate chain does not lead to a trusted root: no trusted certificate "CN=Test Update Intermediate CA" issued "CN=Test Publisher nochain"'],
    ['otherroot', 'This update package is not secure: the certificate chain does not lead to a trusted root: no trusted certificate "CN=Other Root CA" issued "CN=Test Publisher otherroot"'],
    ['notca', 'This update package is not secure: the intermediate certificate "CN=Test Publisher leafissuer" that issued "CN=Test Publisher notca" is not a CA'],
    ['ecP521', 'This update package is not secure: the signer certificate has an EC key on curve secp521r1 (P-256 or P-384 required)'],
    ['toolong', 'This update package is corrupt: signer.pem holds 6 certificates (at most 5)'],
  ];
  for (const [publisher, message] of expected) {
    it(`refuses the ${publisher} publisher`, async () => {
      const file = await makePackage(work, name(), good({ publisher: pki.bad[publisher] }));
      assert.equal(await rejection(file), message);
    });
  }

  it('refuses a good package when the trust store holds another root', async () => {
    const file = await makePackage(work, name(), good());
    assert.match(await rejection(file, await loadTrustStore(pki.otherRoot)), /^This update package is not secure: the certificate chain does not lead to a trusted root: no trusted certificate "CN=Test Update Root CA" issued "CN=Test Update Intermediate CA"$/);
  });
});

describe('what issuers may vouch for, and who may sign', () => {
  let eku: EkuPki;
  before(async () => {
    eku = await createEkuPki(pki);
  });

  it('refuses a code signer vouched for by an intermediate kept to other usages', async () => {
    const underTls = await makePackage(work, name(), good({ publisher: eku.underTls }));
    assert.equal(await rejection(underTls), 'This update package is not secure: the intermediate certificate "CN=Test TLS-only Intermediate CA" may not vouch for code signing (its extended key usage allows only serverAuth)');
    const underTlsClient = await makePackage(work, name(), good({ publisher: eku.underTlsClient }));
    assert.equal(await rejection(underTlsClient), 'This update package is not secure: the intermediate certificate "CN=Test TLS Client Intermediate CA" may not vouch for code signing (its extended key usage allows only serverAuth, clientAuth)');
  });

  it('accepts intermediates with no extended key usage, with codeSigning, or with anyExtendedKeyUsage', async () => {
    for (const [publisher, signer] of [[pki.good.ecP256, 'CN=Test Publisher ec-p256'], [eku.underCode, 'CN=Test Publisher under code CA'], [eku.underAny, 'CN=Test Publisher under any CA']] as const) {
      const file = await makePackage(work, name(), good({ publisher }));
      assert.equal((await verifyPackage(file, { trust })).signer.subject, signer);
    }
  });

  it('refuses a CA certificate as the signer, code-signing usage or not', async () => {
    const file = await makePackage(work, name(), good({ publisher: eku.caSigner }));
    assert.equal(await rejection(file), 'This update package is not secure: the signer certificate is a CA certificate (basicConstraints CA:true); sign with an end-entity code-signing certificate');
  });

  it('holds the trusted root to its extended key usage too', async () => {
    const underTlsRoot = await makePackage(work, name(), good({ publisher: eku.tlsRoot.publisher }));
    assert.equal(await rejection(underTlsRoot, await loadTrustStore(eku.tlsRoot.root)), 'This update package is not secure: the root certificate "CN=Test TLS-only Root CA" may not vouch for code signing (its extended key usage allows only serverAuth)');
    const underCodeRoot = await makePackage(work, name(), good({ publisher: eku.codeRoot.publisher }));
    assert.equal((await verifyPackage(underCodeRoot, { trust: await loadTrustStore(eku.codeRoot.root) })).chain.length, 2);
  });
});

describe('tampering', () => {
  it('refuses a manifest altered after signing', async () => {
    const file = await broken(async (stage) => {
      const manifest = path.join(stage, 'manifest.json');
      await writeFile(manifest, (await readFile(manifest, 'utf8')).replace('"6.1.2"', '"6.1.3"'));
    });
    assert.equal(await rejection(file), 'This update package is not secure: the manifest signature does not verify with the signer certificate (manifest.json was altered or signed with another key)');
  });

  it('refuses a payload altered after signing (same size)', async () => {
    const file = await broken(async (stage) => {
      const payload = path.join(stage, 'payload.tar.gz');
      const bytes = await readFile(payload);
      bytes[bytes.length - 10] = (bytes[bytes.length - 10] ?? 0) ^ 0xff;
      await writeFile(payload, bytes);
    });
    assert.equal(await rejection(file), 'This update package is corrupt: payload checksum does not match the manifest');
  });

  it('refuses a payload with bytes added', async () => {
    const file = await broken((stage) => appendFile(path.join(stage, 'payload.tar.gz'), 'x'));
    assert.match(await rejection(file), /^This update package is corrupt: payload size does not match the manifest \(\d+ bytes, manifest says \d+\)$/);
  });

  it('refuses a signer swapped for another valid publisher', async () => {
    const file = await broken((stage) => copyFile(pki.good.ecP256.chain, path.join(stage, 'signer.pem')));
    assert.match(await rejection(file), /^This update package is not secure: the manifest signature does not verify/);
  });

  it('refuses a manifest that expired', async () => {
    const file = await makePackage(work, name(), good({ expires: '2021-06-01T00:00:00Z' }));
    assert.equal(await rejection(file), 'This update package is not secure: the package expired on 2021-06-01T00:00:00.000Z');
  });

  it('refuses a private key in signer.pem', async () => {
    const file = await broken(async (stage) => appendFile(path.join(stage, 'signer.pem'), await readFile(pki.good.rsa.key)));
    assert.equal(await rejection(file), 'This update package is corrupt: signer.pem holds a "PRIVATE KEY" block; it must hold certificates only');
  });
});

describe('container rules', () => {
  it('refuses an extra member', async () => {
    const file = await broken((stage) => writeFile(path.join(stage, 'README.txt'), 'hello'), { members: [...MEMBERS, 'README.txt'] });
    assert.equal(await rejection(file), 'This update package is corrupt: unexpected member "README.txt" (a package holds only manifest.json, manifest.sig, signer.pem, payload.tar.gz)');
  });

  it('refuses a symbolic link member', async () => {
    const file = await broken(async (stage) => {
      await rm(path.join(stage, 'signer.pem'));
      await symlink(pki.good.rsa.chain, path.join(stage, 'signer.pem'));
    });
    assert.equal(await rejection(file), 'This update package is corrupt: member "signer.pem" is a symbolic link');
  });

  it('refuses a hard link member', async () => {
    const file = await broken(async (stage) => {
      await rm(path.join(stage, 'manifest.sig'));
      await link(path.join(stage, 'manifest.json'), path.join(stage, 'manifest.sig'));
    }, { members: ['manifest.json', 'manifest.sig', 'signer.pem', 'payload.tar.gz'] });
    assert.equal(await rejection(file), 'This update package is corrupt: member "manifest.sig" is a hard link');
  });

  it('refuses a member whose name climbs out with ../', async () => {
    const file = await broken(async (stage) => mkdir(path.join(stage, 'sub')), {
      tarArgs: ['-P'], members: ['manifest.json', 'manifest.sig', 'signer.pem', 'sub/../payload.tar.gz'],
    });
    assert.equal(await rejection(file), 'This update package is corrupt: member "sub/../payload.tar.gz" has ".." in its name');
  });

  it('refuses an absolute member name, a directory and a device', async () => {
    const absolute = await craftTar(path.join(work, 'abs.pkg'), [{ name: '/etc/manifest.json', content: '{}' }]);
    assert.equal(await rejection(absolute), 'This update package is corrupt: member "/etc/manifest.json" has an absolute name');
    const directory = await craftTar(path.join(work, 'dir.pkg'), [{ name: 'hooks', type: 'dir' }]);
    assert.equal(await rejection(directory), 'This update package is corrupt: member "hooks/" is a directory');
    const device = await craftTar(path.join(work, 'dev.pkg'), [{ name: 'manifest.json', type: 'chardev' }]);
    assert.equal(await rejection(device), 'This update package is corrupt: member "manifest.json" is a device');
  });

  it('refuses a duplicate member', async () => {
    const id = name();
    const stage = await stagePackage(path.join(work, `${id}.stage`), good());
    const file = await packStage(stage, path.join(work, `${id}.pkg`));
    await must('tar', ['-C', stage, '-rf', file, 'manifest.json']);
    assert.equal(await rejection(file), 'This update package is corrupt: duplicate member "manifest.json"');
  });

  it('refuses a missing member', async () => {
    const file = await broken(async () => undefined, { members: ['manifest.json', 'manifest.sig', 'payload.tar.gz'] });
    assert.equal(await rejection(file), 'This update package is corrupt: missing member signer.pem');
  });

  it('refuses oversized members', async () => {
    const bigManifest = await broken(async (stage) => {
      const manifest = JSON.parse(await readFile(path.join(stage, 'manifest.json'), 'utf8')) as Record<string, unknown>;
      await writeFile(path.join(stage, 'manifest.json'), JSON.stringify({ ...manifest, notes: 'x'.repeat(70 * 1024) }));
    });
    assert.equal(await rejection(bigManifest), 'This update package is corrupt: manifest.json is larger than 64 KiB');
    const bigSignature = await broken((stage) => writeFile(path.join(stage, 'manifest.sig'), Buffer.alloc(2048, 1)));
    assert.equal(await rejection(bigSignature), 'This update package is corrupt: manifest.sig is larger than 1 KiB');
  });

  it('refuses files that are not packages', async () => {
    const empty = path.join(work, 'empty.pkg');
    await writeFile(empty, '');
    assert.equal(await rejection(empty), 'This update package is corrupt: the file is empty');
    const text = path.join(work, 'text.pkg');
    await writeFile(text, 'this is not a tar archive at all, just some text that goes on for a while.\n'.repeat(20));
    assert.match(await rejection(text), /^This update package is corrupt: the file is not a tar or tar\.gz archive \(.+\)$/);
    const good1 = await makePackage(work, name(), good());
    const bytes = await readFile(good1);
    const truncated = path.join(work, 'truncated.pkg');
    await writeFile(truncated, bytes.subarray(0, 1300));
    assert.equal(await rejection(truncated), 'This update package is corrupt: the archive is cut short (it ends inside a header)');
    const payloadHeader = bytes.indexOf('payload.tar.gz\0');
    await writeFile(truncated, bytes.subarray(0, payloadHeader + 512 + 10));
    assert.match(await rejection(truncated), /^This update package is corrupt: the archive is cut short \("payload\.tar\.gz" lacks \d+ bytes\)$/);
    const gz = await makePackage(work, name(), { ...good(), gzip: true });
    const gzBytes = await readFile(gz);
    gzBytes.fill(0x55, 40, 80);
    await writeFile(gz, gzBytes);
    assert.match(await rejection(gz), /^This update package is corrupt: the archive is unreadable \(bad gzip data: .+\)$/);
  });
});

describe('manifest fields (validly signed, still corrupt)', () => {
  const cases: [string, (m: Record<string, unknown>) => Record<string, unknown>, string][] = [
    ['format 2', (m) => ({ ...m, format: 2 }), 'manifest field "format" must be 1'],
    ['an upper-case product', (m) => ({ ...m, product: 'WatchDoc' }), 'manifest field "product" must be 1 to 64 of a-z 0-9 . _ -'],
    ['a missing version', ({ version: _v, ...m }) => m, 'manifest has no "version" field'],
    ['a version with 5 parts', (m) => ({ ...m, version: '1.2.3.4.5' }), 'manifest field "version" must be 1 to 4 dot-separated numbers (e.g. 6.1.2)'],
    ['a bad minVersion', (m) => ({ ...m, minVersion: 'six' }), 'manifest field "minVersion" must be 1 to 4 dot-separated numbers (e.g. 6.1.2)'],
    ['a bad expires', (m) => ({ ...m, expires: 'next year' }), 'manifest field "expires" must be an ISO 8601 date and time'],
    ['a bad created', (m) => ({ ...m, created: '2026-13-45T00:00:00Z' }), 'manifest field "created" must be an ISO 8601 date and time'],
    ['another payload path', (m) => ({ ...m, payload: { ...(m.payload as object), path: '../payload.tar.gz' } }), 'manifest field "payload.path" must be "payload.tar.gz"'],
    ['an upper-case sha256', (m) => ({ ...m, payload: { ...(m.payload as { sha256: string }), sha256: (m.payload as { sha256: string }).sha256.toUpperCase() } }), 'manifest field "payload.sha256" must be 64 lowercase hexadecimal digits'],
    ['a negative size', (m) => ({ ...m, payload: { ...(m.payload as object), size: -1 } }), 'manifest field "payload.size" must be a whole number of bytes'],
    ['no payload', ({ payload: _p, ...m }) => m, 'manifest has no "payload" field'],
    ['a negative unpackedSize', (m) => ({ ...m, unpackedSize: -1 }), 'manifest field "unpackedSize" must be a whole number of bytes'],
    ['a fractional unpackedSize', (m) => ({ ...m, unpackedSize: 1.5 }), 'manifest field "unpackedSize" must be a whole number of bytes'],
    ['an unpackedSize in quotes', (m) => ({ ...m, unpackedSize: '1200' }), 'manifest field "unpackedSize" must be a whole number of bytes'],
    ['an unpackedSize beyond 2^53', (m) => ({ ...m, unpackedSize: 2 ** 60 }), 'manifest field "unpackedSize" must be a whole number of bytes'],
  ];
  for (const [label, edit, reason] of cases) {
    it(`refuses ${label}`, async () => {
      const file = await makePackage(work, name(), good({ editManifest: edit }));
      assert.equal(await rejection(file), `This update package is corrupt: ${reason}`);
    });
  }

  it('reads the optional unpackedSize (a format 1 extension: older verifiers ignore it)', async () => {
    const file = await makePackage(work, name(), good({ editManifest: (m) => ({ ...m, unpackedSize: 1200 }) }));
    assert.equal((await verifyPackage(file, { trust })).manifest.unpackedSize, 1200);
    assert.equal((await verifyPackage(await makePackage(work, name(), good()), { trust })).manifest.unpackedSize, undefined);
  });

  it('ignores unknown fields', async () => {
    const file = await makePackage(work, name(), good({ editManifest: (m) => ({ ...m, channel: 'beta', format2: { x: 1 } }) }));
    assert.equal((await verifyPackage(file, { trust })).manifest.product, 'watchdoc');
  });

  it('refuses a manifest that is not JSON, not UTF-8, or not an object', async () => {
    const raw = async (content: Buffer | string) => broken(async (stage) => {
      await writeFile(path.join(stage, 'manifest.json'), content);
      await signStage(stage, pki.good.rsa.key);
    });
    assert.match(await rejection(await raw('{"format": 1,')), /^This update package is corrupt: manifest\.json is not valid JSON \(.+\)$/);
    assert.equal(await rejection(await raw(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))), 'This update package is corrupt: manifest.json is not valid UTF-8');
    assert.equal(await rejection(await raw('[1, 2]')), 'This update package is corrupt: manifest.json is not a JSON object');
  });
});
