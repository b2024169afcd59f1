import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makePackage, MEMBERS, packStage, signStage, stagePackage } from './helpers/openssl-package.js';
import { must, propagator, tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let payloadDir: string;
let devCerts: string;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
  payloadDir = path.join(work, 'payload');
  await mkdir(path.join(payloadDir, 'hooks'), { recursive: true });
  await writeFile(path.join(payloadDir, 'watchdoc.conf'), 'release=6.2.0\n');
  await writeFile(path.join(payloadDir, 'hooks', 'health'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  devCerts = path.join(work, 'certs');
  const init = await propagator(['certs', 'init', '--out', devCerts]);
  assert.equal(init.code, 0, init.stderr);
});
after(() => cleanup());

const build = (out: string, key: string, chain: string, extra: string[] = [], env?: NodeJS.ProcessEnv) =>
  propagator(['package', 'build', '--payload', payloadDir, '--product', 'watchdoc', '--version', '6.2.0', '--key', key, '--chain', chain, '--out', out, ...extra],
    env ? { env: { ...process.env, ...env } } : {});

/** Checks a package the way a publisher with only openssl would. */
async function opensslAccepts(file: string, root: string): Promise<void> {
  const dir = path.join(work, `${path.basename(file)}.openssl`);
  await mkdir(dir);
  await must('tar', ['-xf', file, '-C', dir]);
  assert.deepEqual((await readdir(dir)).sort(), ['manifest.json', 'manifest.sig', 'payload.tar.gz', 'signer.pem']);
  await writeFile(path.join(dir, 'pub.pem'), await must('openssl', ['x509', '-in', path.join(dir, 'signer.pem'), '-pubkey', '-noout']));
  const verified = await must('openssl', ['dgst', '-sha256', '-verify', path.join(dir, 'pub.pem'), '-signature', path.join(dir, 'manifest.sig'), path.join(dir, 'manifest.json')]);
  assert.equal(verified.trim(), 'Verified OK');
  const manifest = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')) as { payload: { sha256: string; size: number } };
  const [sum] = (await must('sha256sum', [path.join(dir, 'payload.tar.gz')])).split(' ');
  assert.equal(sum, manifest.payload.sha256);
  assert.equal((await stat(path.join(dir, 'payload.tar.gz'))).size, manifest.payload.size);
  const chain = await must('openssl', ['verify', '-CAfile', root, '-untrusted', path.join(dir, 'signer.pem'), '-purpose', 'any', path.join(dir, 'signer.pem')]);
  assert.match(chain, /: OK/);
}

describe('propagator certs init', () => {
  it('writes a development PKI with private keys readable by the owner only', async () => {
    for (const [file, mode] of [['dev-root-ca.key', 0o600], ['publisher.key', 0o600], ['publisher.pem', 0o644], ['trusted/dev-root-ca.pem', 0o644]] as const) {
      assert.equal((await stat(path.join(devCerts, file))).mode & 0o777, mode, file);
    }
    const purpose = await must('openssl', ['x509', '-in', path.join(devCerts, 'publisher.pem'), '-noout', '-ext', 'extendedKeyUsage,basicConstraints']);
    assert.match(purpose, /Code Signing/);
    assert.match(purpose, /CA:FALSE/);
  });

  it('refuses to overwrite existing keys', async () => {
    const before = await readFile(path.join(devCerts, 'publisher.key'), 'utf8');
    const again = await propagator(['certs', 'init', '--out', devCerts]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already exist; refusing to overwrite/);
    assert.equal(await readFile(path.join(devCerts, 'publisher.key'), 'utf8'), before);
  });
});

describe('propagator package build', () => {
  it('builds a package that the openssl CLI and propagator both verify (development PKI)', async () => {
    const out = path.join(work, 'dev.pkg');
    const built = await build(out, path.join(devCerts, 'publisher.key'), path.join(devCerts, 'publisher.pem'));
    assert.equal(built.code, 0, built.stderr);
    assert.equal(built.stdout.trim(), out);
    await opensslAccepts(out, path.join(devCerts, 'trusted', 'dev-root-ca.pem'));
    const verified = await propagator(['package', 'verify', out, '--trust', path.join(devCerts, 'trusted')]);
    assert.equal(verified.code, 0, verified.stderr);
    const summary = JSON.parse(verified.stdout) as { product: string; version: string; signer: string; chain: unknown[]; unpackedSize: number; payload: { size: number; sha256: string } };
    assert.equal(summary.product, 'watchdoc');
    // The builder declares what the payload's files hold: watchdoc.conf and hooks/health.
    assert.equal(summary.unpackedSize, 'release=6.2.0\n'.length + '#!/bin/sh\nexit 0\n'.length);
    assert.equal(summary.version, '6.2.0');
    assert.match(summary.signer, /^CN=Propagator Development Publisher/);
    assert.equal(summary.chain.length, 2);
    assert.match(summary.payload.sha256, /^[0-9a-f]{64}$/);
  });

  it('signs with ECDSA P-256 and P-384 and with an intermediate in the chain', async () => {
    for (const [label, publisher] of [['p256', pki.good.ecP256], ['p384', pki.good.ecP384], ['rsa', pki.good.rsa]] as const) {
      const out = path.join(work, `${label}.pkg`);
      const built = await build(out, publisher.key, publisher.chain, ['--gzip', '--min-version', '6.0', '--expires', '2099-01-01T00:00:00Z', '--description', 'Monthly fixes']);
      assert.equal(built.code, 0, built.stderr);
      assert.equal((await readFile(out)).subarray(0, 2).toString('hex'), '1f8b', 'gzipped container');
      const verified = await propagator(['package', 'verify', out, '--trust', pki.root]);
      assert.equal(verified.code, 0, verified.stderr);
      const summary = JSON.parse(verified.stdout) as { minVersion: string; expires: string; description: string; chain: unknown[] };
      assert.deepEqual([summary.minVersion, summary.expires, summary.description, summary.chain.length], ['6.0', '2099-01-01T00:00:00Z', 'Monthly fixes', 3]);
    }
    const plain = path.join(work, 'plain-ec.pkg');
    assert.equal((await build(plain, pki.good.ecP256.key, pki.good.ecP256.chain)).code, 0);
    await opensslAccepts(plain, pki.root);
  });

  it('reads an encrypted key with PROPAGATOR_KEY_PASSPHRASE', async () => {
    const encrypted = path.join(work, 'encrypted.key');
    await must('openssl', ['pkey', '-in', pki.good.rsa.key, '-aes256', '-passout', 'pass:s3cret', '-out', encrypted]);
    const without = await build(path.join(work, 'enc1.pkg'), encrypted, pki.good.rsa.chain);
    assert.equal(without.code, 2);
    assert.match(without.stderr, /is not a usable private key .* an encrypted key needs PROPAGATOR_KEY_PASSPHRASE/);
    const withPass = await build(path.join(work, 'enc2.pkg'), encrypted, pki.good.rsa.chain, [], { PROPAGATOR_KEY_PASSPHRASE: 's3cret' });
    assert.equal(withPass.code, 0, withPass.stderr);
    assert.doesNotMatch(withPass.stderr + withPass.stdout, /s3cret/);
  });

  it('explains each mistake and writes nothing', async () => {
    const out = path.join(work, 'mistake.pkg');
    const cases: [string[], RegExp][] = [
      [['package', 'build', '--product', 'watchdoc'], /^propagator: missing --payload, --version, --key, --chain, --out\n/],
      [['package', 'build', '--payload', payloadDir, '--product', 'watchdoc', '--version', 'six', '--key', pki.good.rsa.key, '--chain', pki.good.rsa.chain, '--out', out],
        /^propagator: field "version" must be 1 to 4 dot-separated numbers \(e\.g\. 6\.1\.2\)\n$/],
      [['package', 'build', '--payload', payloadDir, '--product', 'Watch Doc', '--version', '1', '--key', pki.good.rsa.key, '--chain', pki.good.rsa.chain, '--out', out],
        /^propagator: field "product" must be 1 to 64 of a-z 0-9 \. _ -\n$/],
      [['package', 'build', '--payload', payloadDir, '--product', 'watchdoc', '--version', '1', '--key', pki.good.ecP256.key, '--chain', pki.good.rsa.chain, '--out', out],
        /^propagator: the key .*ec-p256\.key does not belong to the first certificate of .*signer-chain\.pem \("CN=Test Publisher signer"\)\n$/],
      [['package', 'build', '--payload', path.join(work, 'nope'), '--product', 'watchdoc', '--version', '1', '--key', pki.good.rsa.key, '--chain', pki.good.rsa.chain, '--out', out],
        /^propagator: payload directory .*nope does not exist or is not a directory\n$/],
      [['package', 'build', '--payload', payloadDir, '--product', 'watchdoc', '--version', '1', '--key', pki.good.rsa.key, '--chain', pki.good.rsa.key, '--out', out],
        /^propagator: .*signer\.key: signer\.pem holds a "PRIVATE KEY" block; it must hold certificates only\n$/],
      [['package', 'build', '--payload', payloadDir, '--product', 'watchdoc', '--version', '1', '--key', pki.good.rsa.key, '--chain', pki.good.rsa.chain, '--out', out, '--expires', '2020-01-01'],
        /^propagator: --expires 2020-01-01 is already in the past\n$/],
      [['package', 'build', '--payload', payloadDir, '--product', 'watchdoc', '--version', '1', '--key', pki.good.rsa.key, '--chain', pki.good.rsa.chain, '--out', path.join(work, 'missing-dir', 'x.pkg')],
        /^propagator: output folder .*missing-dir does not exist\n$/],
    ];
    for (const [args, message] of cases) {
      const result = await propagator(args);
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, message);
    }
    assert.deepEqual((await readdir(work)).filter((f) => f.startsWith('mistake') || f.startsWith('.mistake')), []);
  });

  it('warns when the signer certificate has expired', async () => {
    const result = await build(path.join(work, 'expired.pkg'), pki.bad.expired.key, pki.bad.expired.chain);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /^warning: the signer certificate expired on 2021-01-01T00:00:00\.000Z: verifiers will refuse this package$/m);
  });
});

describe('propagator package verify', () => {
  it('accepts a package built with openssl alone', async () => {
    const file = await makePackage(work, 'openssl-built', { publisher: pki.good.ecP256, payloadDir, version: '6.1.9' });
    const result = await propagator(['package', 'verify', file, '--trust', pki.root]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal((JSON.parse(result.stdout) as { version: string }).version, '6.1.9');
    assert.equal(result.stderr, '');
  });

  it('exits 1 with one line naming the reason', async () => {
    const insecure = await makePackage(work, 'cli-selfsigned', { publisher: pki.bad.selfsigned, payloadDir });
    const result = await propagator(['package', 'verify', insecure, '--trust', pki.root]);
    assert.equal(result.code, 1);
    assert.equal(result.stdout, '');
    assert.equal(result.stderr, 'This update package is not secure: the signer certificate "CN=Test Publisher selfsigned" is self-signed and not in the trust store\n');
    const junk = path.join(work, 'junk.pkg');
    await writeFile(junk, 'not a package, not even close to one, just words.\n'.repeat(30));
    const corrupt = await propagator(['package', 'verify', junk, '--trust', pki.root]);
    assert.equal(corrupt.code, 1);
    assert.match(corrupt.stderr, /^This update package is corrupt: the file is not a tar or tar\.gz archive \(.+\)\n$/);
  });

  it('reads the trust store from PROPAGATOR_TRUST and reports setup problems with exit 2', async () => {
    const file = await makePackage(work, 'env-trust', { publisher: pki.good.rsa, payloadDir });
    const viaEnv = await propagator(['package', 'verify', file], { env: { ...process.env, PROPAGATOR_TRUST: pki.root } });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    const noTrust = await propagator(['package', 'verify', file, '--trust', path.join(work, 'no-such-trust')]);
    assert.equal(noTrust.code, 2);
    assert.match(noTrust.stderr, /^propagator: trust store .*no-such-trust does not exist\n$/);
    const emptyTrust = path.join(work, 'empty-trust');
    await mkdir(emptyTrust);
    const empty = await propagator(['package', 'verify', file, '--trust', emptyTrust]);
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /holds no certificate/);
    const missing = await propagator(['package', 'verify', path.join(work, 'absent.pkg'), '--trust', pki.root]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^propagator: cannot read the package file .*absent\.pkg: ENOENT\n$/);
  });

  it('explains usage mistakes', async () => {
    const unknown = await propagator(['package', 'frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command: package frobnicate/);
    const noFile = await propagator(['package', 'verify']);
    assert.equal(noFile.code, 2);
    assert.match(noFile.stderr, /package verify takes exactly one FILE/);
    const usage = await propagator(['help']);
    assert.equal(usage.code, 0);
    assert.match(usage.stdout, /propagator package build --payload DIR/);
  });
});

describe('text from a package never drives the terminal', () => {
  // Any control character but the newline that ends a line, C1 controls and the bidirectional ones.
  // eslint-disable-next-line no-control-regex
  const RAW = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
  const HOSTILE = '\u001b[2J\u001b[31mred\u009b2J\u202eevil';
  const ESCAPED = '\\u001b[2J\\u001b[31mred\\u009b2J\\u202eevil';

  const verify = async (file: string) => {
    const result = await propagator(['package', 'verify', file, '--trust', pki.root]);
    assert.doesNotMatch(result.stdout, RAW);
    assert.doesNotMatch(result.stderr, RAW);
    return result;
  };

  it('escapes a member name made of terminal sequences', async () => {
    const stage = await stagePackage(path.join(work, 'esc-member.stage'), { publisher: pki.good.rsa, payloadDir });
    await writeFile(path.join(stage, HOSTILE), 'hidden');
    const file = await packStage(stage, path.join(work, 'esc-member.pkg'), { members: [...MEMBERS, HOSTILE] });
    const result = await verify(file);
    assert.equal(result.code, 1);
    assert.equal(result.stderr, `This update package is corrupt: unexpected member "${ESCAPED}" (a package holds only manifest.json, manifest.sig, signer.pem, payload.tar.gz)\n`);
  });

  it('prints a hostile description as valid JSON with escapes, the same text once parsed', async () => {
    const description = `Monthly fixes ${HOSTILE} \u007f\u2066end`;
    const file = await makePackage(work, 'esc-description', { publisher: pki.good.rsa, payloadDir, editManifest: (m) => ({ ...m, description }) });
    const result = await verify(file);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(result.stdout.includes('"description": "Monthly fixes \\u001b[2J\\u001b[31mred\\u009b2J\\u202eevil \\u007f\\u2066end"'), result.stdout);
    assert.equal((JSON.parse(result.stdout) as { description: string }).description, description);
  });

  it('escapes a certificate subject and a manifest that is not JSON', async () => {
    const key = path.join(work, 'esc-signer.key');
    const cert = path.join(work, 'esc-signer.pem');
    await must('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
      '-days', '30', '-utf8', '-subj', `/CN=Publisher ${HOSTILE}`]);
    const insecure = await verify(await makePackage(work, 'esc-subject', { publisher: { key, chain: cert }, payloadDir }));
    assert.equal(insecure.code, 1);
    // node writes ESC in a name as \1B itself; the C1 and bidirectional controls are escaped here
    assert.equal(insecure.stderr, 'This update package is not secure: the signer certificate "CN=Publisher \\1B[2J\\1B[31mred\\u009b2J\\u202eevil" is self-signed and not in the trust store\n');

    const stage = await stagePackage(path.join(work, 'esc-json.stage'), { publisher: pki.good.rsa, payloadDir });
    await writeFile(path.join(stage, 'manifest.json'), '[\u001b[2J\u009b\u202e]');
    await signStage(stage, pki.good.rsa.key);
    const notJson = await verify(await packStage(stage, path.join(work, 'esc-json.pkg')));
    assert.equal(notJson.code, 1);
    // V8 quotes the text it could not parse
    assert.equal(notJson.stderr, `This update package is corrupt: manifest.json is not valid JSON (Unexpected token '\\u001b', "[\\u001b[2J\\u009b\\u202e]" is not valid JSON)\n`);
  });
});
