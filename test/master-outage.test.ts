import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { waitFor } from './helpers/master-process.js';
import { openProcessDomain, type ProcessDomain } from './helpers/process-domain.js';
import { makeRelease } from './helpers/releases.js';
import { startThrottlingProxy, type ThrottlingProxy } from './helpers/throttling-proxy.js';

// The master goes away in the middle of a download (SIGKILL of the real process): the agent keeps
// resuming until the target's deadline as the master set it, and cleans up if it never returns.

const TOKEN = 'outage-enrollment-token-0123456789';
let d: ProcessDomain;
let proxy: ThrottlingProxy;

before(async () => {
  d = await openProcessDomain(TOKEN);
  await d.startMaster();
  proxy = await startThrottlingProxy(d.port, { match: /^GET \/api\/agent\/packages\//, bytesPerSecond: 256 * 1024 });
});

after(async () => {
  await proxy.close();
  await d.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The attempt numbers the agent logged for interrupted downloads. */
function attempts(logs: string): number[] {
  return logs.split('\n').filter((l) => l.includes('download interrupted; will resume')).map((l) => (JSON.parse(l) as { attempt: number }).attempt);
}

async function downloadUnderWay(data: string, sha256: string): Promise<void> {
  const part = path.join(data, 'staging', `${sha256}.part`);
  await waitFor(async () => ((await stat(part).catch(() => null))?.size ?? 0) >= 256 * 1024, 30_000, 'the download to be under way');
}

describe('a master that goes away during a download', () => {
  it('is waited for beyond eight attempts, and the download resumes when it returns', async () => {
    const data = path.join(d.work, 'patient');
    const agent = await d.startAgent('patient', 'mailbox', data, ['--download-retry-max', '1'], {}, proxy.url);
    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.2.0', { padding: 2 * 1024 * 1024 }), 'outage 6.2.0');
    const operation = await d.operate('propagate', pkg.id, [agent.serverId]);
    await downloadUnderWay(data, pkg.sha256);
    // The loopback buffers hold megabytes the proxy has not passed on yet: they go with the master.
    await d.master?.stop('SIGKILL');
    proxy.cutAll();
    // With backoff capped at 1 s, 12 s of outage is well over the 8 attempts agents used to give up after.
    await sleep(12_000);
    await d.startMaster();
    proxy.bytesPerSecond = Infinity;
    const [target] = await d.ended(operation, 60_000);
    assert.deepEqual([target?.state, target?.message], ['succeeded', 'staged watchdoc 6.2.0']);
    assert.ok(Math.max(...attempts(agent.logs())) > 8, `attempts logged: ${attempts(agent.logs()).join(', ')}\n${agent.logs()}`);
    assert.match(agent.logs(), /"msg":"download resumed"/);
    assert.deepEqual((await readdir(path.join(data, 'staging'))).filter((f) => f.endsWith('.part')), []);
  });

  it('gives up at the target\'s deadline as the master set it, and keeps no partial file', async () => {
    await d.master?.stop('SIGTERM');
    await d.startMaster(['--deadline-mailbox', '10']);
    proxy.bytesPerSecond = 256 * 1024;
    const data = path.join(d.work, 'deadline');
    const agent = await d.startAgent('deadline', 'mailbox', data, ['--download-retry-max', '1'], {}, proxy.url);
    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.3.0', { padding: 2 * 1024 * 1024 }), 'outage 6.3.0');
    const operation = await d.operate('propagate', pkg.id, [agent.serverId]);
    await downloadUnderWay(data, pkg.sha256);
    // The loopback buffers hold megabytes the proxy has not passed on yet: they go with the master.
    await d.master?.stop('SIGKILL');
    proxy.cutAll();
    await waitFor(async () => agent.logs().includes('no download before the target\'s deadline'), 30_000, 'the agent to give up at the deadline');
    assert.deepEqual(await readdir(path.join(data, 'staging')), [], 'the partial file was removed');
    const retries = attempts(agent.logs()).length;
    await sleep(3_000);
    assert.equal(attempts(agent.logs()).length, retries, 'no attempt after the deadline');

    await d.startMaster(['--deadline-mailbox', '10']);
    proxy.bytesPerSecond = Infinity;
    const [target] = await d.ended(operation, 60_000);
    // The agent's own result (failed at the deadline) or the master's deadline, whichever is heard first.
    assert.ok(target?.state === 'timedout' || (target?.state === 'failed' && /^no download before the target's deadline \(cannot reach the master/.test(target.message)), JSON.stringify(target));
  });

  it('stops a transfer still under way at the deadline, and keeps no partial file', async () => {
    await d.master?.stop('SIGTERM');
    await d.startMaster(['--deadline-mailbox', '6']);
    // 32 KiB a second: 2 MiB would take a minute; the master stays up all along.
    proxy.bytesPerSecond = 32 * 1024;
    const data = path.join(d.work, 'slow');
    const agent = await d.startAgent('slow', 'mailbox', data, [], {}, proxy.url);
    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.4.0', { padding: 2 * 1024 * 1024 }), 'slow 6.4.0');
    const operation = await d.operate('propagate', pkg.id, [agent.serverId]);
    await waitFor(async () => agent.logs().includes('the transfer was still under way'), 30_000, 'the agent to stop the transfer at the deadline');
    assert.deepEqual(await readdir(path.join(data, 'staging')), [], 'the partial file was removed');
    const [target] = await d.ended(operation, 30_000);
    // The master's deadline, or the agent's result sent at that same instant, whichever is recorded first.
    assert.ok(target?.state === 'timedout' || (target?.state === 'failed' && target.message === 'no download before the target\'s deadline (the transfer was still under way, 1 attempt)'), JSON.stringify(target));
    assert.equal(attempts(agent.logs()).length, 0, 'not retried');
  });
});
