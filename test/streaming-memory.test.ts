import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, it } from 'node:test';
import { makePackage } from './helpers/openssl-package.js';
import { makeRandomPayload } from './helpers/random-payload.js';
import { ROOT, run, tempDir } from './helpers/run.js';
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

async function measure(label: string, bytes: number): Promise<{ maxRssKb: number; payloadSize: number; bytes: number }> {
  const payloadFile = path.join(work, `${label}.payload.tar.gz`);
  await makeRandomPayload(payloadFile, bytes);
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
