import assert from 'node:assert/strict';
import { readdir, readlink, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadAgentConfig } from '../agent/config.js';
import { formatBytes } from '../lib/bytes.js';
import { startAgentProcess, type AgentProcess } from './helpers/agent-process.js';
import { openTestDomain, type TestDomain } from './helpers/domain.js';
import { makePackage } from './helpers/openssl-package.js';
import { makeZerosPayload } from './helpers/random-payload.js';
import { makeRelease } from './helpers/releases.js';

// What an agent does with a package that would fill its disk: a decompression bomb, or a release
// larger than the space left. Real agent processes, a master on loopback.

const TOKEN = 'test-enrollment-token-limits-0123';

let d: TestDomain;

before(async () => {
  d = await openTestDomain(TOKEN);
});
after(() => d.close());

async function startAgent(name: string, env: NodeJS.ProcessEnv = {}): Promise<{ agent: AgentProcess; data: string }> {
  const data = path.join(d.work, `agent-${name}`);
  const agent = await startAgentProcess(['--master', d.master.url, '--name', name, '--mode', 'mailbox', '--data', data, '--trust', d.pki.root,
    '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1'], { PROPAGATOR_ENROLL_TOKEN: TOKEN, ...env });
  d.agents.push(agent);
  return { agent, data };
}

async function apply(agent: AgentProcess, packageId: number) {
  return d.finished((await d.m.services.commands.enqueue({ serverId: agent.serverId, type: 'apply', packageId })).id);
}

describe('an agent and the size of what it unpacks', () => {
  let bombId: number;
  let bombPayloadSize: number;
  before(async () => {
    // 64 MiB of zeros in a 64 KiB payload: a thousand times its size, validly signed.
    const payloadFile = await makeZerosPayload(path.join(d.work, 'bomb.payload.tar.gz'), 64 * 1024 * 1024);
    const file = await makePackage(d.work, 'bomb', { publisher: d.pki.good.rsa, payloadFile, version: '6.2.0' });
    bombId = await d.upload(file);
    bombPayloadSize = (await stat(payloadFile)).size;
  });

  it('refuses a decompression bomb with the reason, leaves nothing, and applies a good package next', async () => {
    const { agent, data } = await startAgent('bomb-1');
    const refused = await apply(agent, bombId);
    assert.equal(refused.state, 'failed');
    assert.equal(refused.message, `extraction failed: This update package is corrupt: the payload unpacks to more than ${10 * bombPayloadSize} bytes, 10 times its compressed size; the manifest declares no unpackedSize`);
    assert.equal(refused.versionAfter, '6.1.0');
    assert.deepEqual(await readdir(path.join(data, 'releases')), [], 'no release, no .partial folder');

    const good = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.2.1'));
    const applied = await apply(agent, good);
    assert.deepEqual([applied.state, applied.message, applied.versionAfter], ['succeeded', 'installed watchdoc 6.2.1', '6.2.1']);
    assert.equal(await readlink(path.join(data, 'current')), path.join('releases', '6.2.1'));
  });

  it('unpacks it when its administrator raises PROPAGATOR_MAX_UNPACK_RATIO', async () => {
    const { agent, data } = await startAgent('bomb-2', { PROPAGATOR_MAX_UNPACK_RATIO: '5000' });
    const applied = await apply(agent, bombId);
    assert.deepEqual([applied.state, applied.versionAfter], ['succeeded', '6.2.0'], applied.message);
    assert.deepEqual(await readdir(path.join(data, 'current', 'data')), ['zeros.bin']);
  });

  it('refuses a release larger than the free disk space, before unpacking anything', async () => {
    const { agent, data } = await startAgent('disk-1');
    const fs = await statfs(data);
    const declared = fs.bavail * fs.bsize + 1024 ** 4;
    const file = await makePackage(d.work, 'huge', { publisher: d.pki.good.rsa, payloadDir: path.join(d.work, 'pki'), version: '6.3.0', editManifest: (m) => ({ ...m, unpackedSize: declared }) });
    const refused = await apply(agent, await d.upload(file));
    assert.equal(refused.state, 'failed');
    const needs = formatBytes(declared).replace('.', '\\.');
    assert.match(refused.message, new RegExp(`^not enough disk space on disk-1: needs ${needs}, has \\d+(\\.\\d)? (bytes|KiB|MiB|GiB|TiB)$`));
    assert.deepEqual(await readdir(path.join(data, 'releases')), []);
  });
});

it('reads --max-unpack-ratio over PROPAGATOR_MAX_UNPACK_RATIO over 10', () => {
  const base = ['--master', 'http://127.0.0.1:1', '--mode', 'mailbox'];
  assert.equal(loadAgentConfig(base, {}).maxUnpackRatio, 10);
  assert.equal(loadAgentConfig(base, { PROPAGATOR_MAX_UNPACK_RATIO: '50' }).maxUnpackRatio, 50);
  assert.equal(loadAgentConfig([...base, '--max-unpack-ratio', '200'], { PROPAGATOR_MAX_UNPACK_RATIO: '50' }).maxUnpackRatio, 200);
  assert.throws(() => loadAgentConfig([...base, '--max-unpack-ratio', '0.5'], {}), { message: '--max-unpack-ratio must be 1 or more' });
  assert.throws(() => loadAgentConfig([...base, '--max-unpack-ratio', 'lots'], {}), { message: '--max-unpack-ratio must be a number' });
});

it('reads --download-retry-max and --drop-staged-after, with their defaults and errors', () => {
  const base = ['--master', 'http://127.0.0.1:1', '--mode', 'mailbox'];
  assert.equal(loadAgentConfig(base, {}).downloadRetryMaxMs, 60_000);
  assert.equal(loadAgentConfig(base, {}).dropStagedAfterMs, 30 * 86_400_000);
  assert.equal(loadAgentConfig([...base, '--download-retry-max', '5'], {}).downloadRetryMaxMs, 5000);
  assert.equal(loadAgentConfig(base, { PROPAGATOR_DROP_STAGED_AFTER: '0.5' }).dropStagedAfterMs, 43_200_000);
  assert.throws(() => loadAgentConfig([...base, '--download-retry-max', 'often'], {}), { message: '--download-retry-max must be a number of seconds' });
  assert.throws(() => loadAgentConfig([...base, '--drop-staged-after', 'never'], {}), { message: '--drop-staged-after must be a number of days' });
  assert.throws(() => loadAgentConfig([...base, '--drop-staged-after', '0'], {}), { message: '--drop-staged-after must be more than 0 days' });
});
