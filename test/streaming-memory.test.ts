import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, it } from 'node:test';
import { makePackage } from './helpers/openssl-package.js';
import { makeRandomPayload, makeZerosPayload } from './helpers/random-payload.js';
import { ROOT, run, tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

// Memory, not time: the verifier and the extractor stream, so a package 500 times larger must not
// need more memory. (Speed is measured by `npm run bench`, never here.)
const LARGE_MIB = 256;
const BOMB_MIB = 1024;

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
});
after(() => cleanup());

interface Measured {
  maxRssKb: number;
  payloadSize: number;
  bytes?: number;
  error?: string;
}

async function measure(label: string, payloadFile: string, maxRatio?: number): Promise<Measured> {
  const file = await makePackage(work, label, { publisher: pki.good.rsa, payloadFile });
  const release = path.join(work, `${label}.release`);
  const result = await run(process.execPath, [path.join(ROOT, 'dist', 'test', 'helpers', 'measure-memory.js'), file, pki.root, release, ...(maxRatio ? [String(maxRatio)] : [])]);
  assert.equal(result.code, 0, result.stderr);
  await rm(release, { recursive: true, force: true });
  return JSON.parse(result.stdout) as Measured;
}

const random = (label: string, bytes: number) => makeRandomPayload(path.join(work, `${label}.payload.tar.gz`), bytes);

it(`verifies and extracts a ${LARGE_MIB} MiB package in the memory a 1 MiB one needs`, async (t) => {
  const small = await measure('small', await random('small', 1024 * 1024));
  const large = await measure('large', await random('large', LARGE_MIB * 1024 * 1024));
  assert.equal(large.bytes, LARGE_MIB * 1024 * 1024);
  assert.ok(large.payloadSize > LARGE_MIB * 1024 * 1024);
  const growthMb = (large.maxRssKb - small.maxRssKb) / 1024;
  t.diagnostic(`peak RSS: 1 MiB package ${Math.round(small.maxRssKb / 1024)} MB, ${LARGE_MIB} MiB package ${Math.round(large.maxRssKb / 1024)} MB`);
  assert.ok(growthMb < 48, `peak RSS grew by ${growthMb.toFixed(1)} MB (small ${small.maxRssKb} kB, large ${large.maxRssKb} kB)`);
});

it(`extracts a ${BOMB_MIB} MiB payload of zeros from a 1 MB package in the memory a tiny one needs, and refuses it by default`, async (t) => {
  const tiny = await measure('tiny', await makeZerosPayload(path.join(work, 'tiny.payload.tar.gz'), 64 * 1024));
  const bombPayload = await makeZerosPayload(path.join(work, 'bomb.payload.tar.gz'), BOMB_MIB * 1024 * 1024);
  // gzip packs zeros about 1000 to 1: the cap must be raised far above its default to let it through.
  const bomb = await measure('bomb', bombPayload, 2000);
  assert.equal(bomb.error, undefined);
  assert.equal(bomb.bytes, BOMB_MIB * 1024 * 1024);
  assert.ok(bomb.payloadSize < 2 * 1024 * 1024, `a small package (${bomb.payloadSize} bytes)`);
  const growthMb = (bomb.maxRssKb - tiny.maxRssKb) / 1024;
  t.diagnostic(`peak RSS: tiny package ${Math.round(tiny.maxRssKb / 1024)} MB, ${BOMB_MIB} MiB of zeros ${Math.round(bomb.maxRssKb / 1024)} MB`);
  assert.ok(growthMb < 48, `peak RSS grew by ${growthMb.toFixed(1)} MB (tiny ${tiny.maxRssKb} kB, bomb ${bomb.maxRssKb} kB)`);

  const refused = await measure('bomb-default', bombPayload);
  assert.equal(refused.error, `This update package is corrupt: the payload unpacks to more than ${10 * refused.payloadSize} bytes, 10 times its compressed size; the manifest declares no unpackedSize`);
});
