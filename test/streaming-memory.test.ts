import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, it } from 'node:test';
import { makePackage } from './helpers/openssl-package.js';
import { must, ROOT, run, tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

// Memory, not time: the verifier and the extractor stream, so a package 500 times larger must not
// need more memory. (Speed is measured by `npm run bench`, never here.)
const LARGE_MIB = 256;

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
});
after(() => cleanup());

// A payload of incompressible bytes, gzip level 0, so payload.tar.gz really is that large.
const MAKE_PAYLOAD = `
import os, sys, tarfile
out, size = sys.argv[1], int(sys.argv[2])
class Random:
    def __init__(self, n): self.left = n
    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)
with tarfile.open(out, 'w:gz', compresslevel=0) as tar:
    info = tarfile.TarInfo('data/blob.bin'); info.size = size
    tar.addfile(info, Random(size))
`;

async function measure(label: string, bytes: number): Promise<{ maxRssKb: number; payloadSize: number; bytes: number }> {
  const payloadFile = path.join(work, `${label}.payload.tar.gz`);
  await must('python3', ['-c', MAKE_PAYLOAD, payloadFile, String(bytes)]);
  const file = await makePackage(work, label, { publisher: pki.good.rsa, payloadFile });
  const result = await run(process.execPath, [path.join(ROOT, 'dist', 'test', 'helpers', 'measure-memory.js'), file, pki.root, path.join(work, `${label}.release`)]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as { maxRssKb: number; payloadSize: number; bytes: number };
}

it(`verifies and extracts a ${LARGE_MIB} MiB package in the memory a 1 MiB one needs`, async (t) => {
  const small = await measure('small', 1024 * 1024);
  const large = await measure('large', LARGE_MIB * 1024 * 1024);
  assert.equal(large.bytes, LARGE_MIB * 1024 * 1024);
  assert.ok(large.payloadSize > LARGE_MIB * 1024 * 1024);
  const growthMb = (large.maxRssKb - small.maxRssKb) / 1024;
  t.diagnostic(`peak RSS: 1 MiB package ${Math.round(small.maxRssKb / 1024)} MB, ${LARGE_MIB} MiB package ${Math.round(large.maxRssKb / 1024)} MB`);
  assert.ok(growthMb < 48, `peak RSS grew by ${growthMb.toFixed(1)} MB (small ${small.maxRssKb} kB, large ${large.maxRssKb} kB)`);
});
