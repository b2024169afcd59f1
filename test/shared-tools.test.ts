import assert from 'node:assert/strict';
import { access, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, propagator, run, tempDir } from './helpers/run.js';

// Optional extra: the reference tools the CEO keeps in ../shared (the project's own tests make
// their own PKI). Skipped, and says so, when ../shared is not beside the checkout.
const TOOLS = path.resolve(ROOT, '..', 'shared', 'tools');
const present = await access(path.join(TOOLS, 'make-package.sh')).then(() => true, () => false);

describe('interoperability with ../shared/tools', { skip: present ? false : `no ${TOOLS}` }, () => {
  let work: string;
  let cleanup: () => Promise<void>;
  let payload: string;

  before(async () => {
    ({ dir: work, cleanup } = await tempDir());
    const pki = await run('bash', [path.join(TOOLS, 'make-test-pki.sh'), path.join(work, 'pki')]);
    assert.equal(pki.code, 0, pki.stderr);
    payload = path.join(work, 'payload');
    await mkdir(path.join(payload, 'hooks'), { recursive: true });
    await writeFile(path.join(payload, 'hooks', 'apply'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  });
  after(() => cleanup?.());

  const expected: [string, string, number, RegExp][] = [
    ['signer.key', 'signer-chain.pem', 0, /"signer": "CN=Test Publisher signer"/],
    ['ec-signer.key', 'ec-signer-chain.pem', 0, /"signer": "CN=Test Publisher ec-signer"/],
    ['bad/expired.key', 'bad/expired-chain.pem', 1, /^This update package is not secure: the signer certificate has expired \(2021-01-01\)\n$/],
    ['bad/notyet.key', 'bad/notyet-chain.pem', 1, /^This update package is not secure: the signer certificate is not valid yet \(valid from 2099-01-01\)\n$/],
    ['bad/selfsigned.key', 'bad/selfsigned-chain.pem', 1, /^This update package is not secure: the signer certificate "CN=Test Publisher selfsigned" is self-signed and not in the trust store\n$/],
    ['bad/weak1024.key', 'bad/weak1024-chain.pem', 1, /^This update package is not secure: the signer certificate has a 1024-bit RSA key/],
    ['bad/sha1.key', 'bad/sha1-chain.pem', 1, /^This update package is not secure: the signer certificate is signed with SHA-1/],
    ['bad/noeku.key', 'bad/noeku-chain.pem', 1, /^This update package is not secure: the signer certificate is not a code-signing certificate/],
    ['bad/nochain.key', 'bad/nochain-chain.pem', 1, /^This update package is not secure: the certificate chain does not lead to a trusted root/],
    ['bad/otherroot.key', 'bad/otherroot-chain.pem', 1, /^This update package is not secure: the certificate chain does not lead to a trusted root: no trusted certificate "CN=Other Root CA"/],
  ];
  for (const [key, chain, code, output] of expected) {
    it(`make-package.sh with ${key} → exit ${code}`, async () => {
      const out = path.join(work, `${path.basename(key, '.key')}.pkg`);
      const made = await run('bash', [path.join(TOOLS, 'make-package.sh'), '--payload', payload, '--product', 'watchdoc', '--version', '6.1.2',
        '--key', path.join(work, 'pki', key), '--chain', path.join(work, 'pki', chain), '--out', out, ...(code === 0 ? ['--gzip'] : [])]);
      assert.equal(made.code, 0, made.stderr);
      const verified = await propagator(['package', 'verify', out, '--trust', path.join(work, 'pki', 'root.pem')]);
      assert.equal(verified.code, code, verified.stderr);
      assert.match(code === 0 ? verified.stdout : verified.stderr, output);
    });
  }
});
