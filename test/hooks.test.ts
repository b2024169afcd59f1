import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, mkdir, readFile, readlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runAgentToExit, startAgentProcess } from './helpers/agent-process.js';
import { openTestDomain, type TestDomain } from './helpers/domain.js';
import { waitFor } from './helpers/master-process.js';
import { makeRelease } from './helpers/releases.js';

const TOKEN = 'hooks-enrollment-token-0123456789';

let d: TestDomain;
/** Processes a test leaves running on purpose (a service a hook started): killed at the end. */
const leftovers: number[] = [];

before(async () => {
  d = await openTestDomain(TOKEN);
});
after(async () => {
  for (const pid of leftovers) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await d.close();
});

const exists = (p: string) => access(p).then(() => true, () => false);

/** Whether a process (or a process group, for a negative number) has a live member. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether a process is gone or a zombie waiting for its reaper: dead either way. */
async function dead(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  return stat === null || stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
}

async function start(name: string, extra: string[] = [], token = true) {
  const data = path.join(d.work, `agent-${name}`);
  const agent = await startAgentProcess(['--master', d.master.url, '--name', name, '--mode', 'mailbox', '--data', data, '--trust', d.pki.root,
    '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1', ...extra], token ? { PROPAGATOR_ENROLL_TOKEN: TOKEN } : {});
  d.agents.push(agent);
  return { agent, data };
}

async function apply(serverId: number, file: string) {
  const packageId = await d.upload(file);
  return d.m.services.commands.enqueue({ serverId, type: 'apply', packageId });
}

describe('a hook that outlives its agent', () => {
  it('is stopped when the agent, killed during hooks/apply, restarts and rolls back', async () => {
    const { agent, data } = await start('orphan-1');
    // The hook's cwd is DATA/releases/<version>: ../../ is DATA.
    const command = await apply(agent.serverId, await makeRelease(d.work, d.pki.good.rsa, '6.5.0', { apply: 'touch ../../apply-started; sleep 8; touch ../../apply-finished' }));
    await waitFor(() => exists(path.join(data, 'apply-started')), 20_000, 'the apply hook to start');
    const journal = JSON.parse(await readFile(path.join(data, 'install.json'), 'utf8')) as { phase: string; hook?: { name: string; pgid: number; startTime: number } };
    await agent.stop('SIGKILL');

    const restarted = await start('orphan-1', [], false);
    const result = await d.finished(command.id);
    assert.deepEqual([result.state, result.message, result.versionAfter], ['failed', 'the agent stopped during the install of 6.5.0 (applying); rolled back to 6.1.0', '6.1.0']);
    // Long after the hook would have finished, it has not.
    await new Promise((r) => setTimeout(r, 9_000));
    assert.equal(await exists(path.join(data, 'apply-finished')), false, 'the orphaned hook never finished');
    assert.deepEqual([journal.phase, journal.hook?.name], ['applying', 'hooks/apply'], 'the journal names the running hook');
    const pgid = journal.hook?.pgid ?? 0;
    assert.ok(await dead(pgid), 'the hook is gone');
    assert.match(restarted.agent.logs(), new RegExp(`"msg":"stopped what was left of a hook the agent's stop interrupted","agent":"orphan-1","hook":"hooks/apply","pgid":${pgid},"processes":2,"forced":false`));
    await assert.rejects(readlink(path.join(data, 'current')), { code: 'ENOENT' });
    await assert.rejects(access(path.join(data, 'releases', '6.5.0')));
  });

  it('leaves alone a process that got the hook\'s process group number later', async () => {
    const { agent, data } = await start('orphan-reused');
    await agent.stop();
    // A process of its own group, as if it had taken the number of a hook that ended long ago.
    const stranger = spawn('sleep', ['60'], { detached: true, stdio: 'ignore' });
    const pid = stranger.pid ?? 0;
    leftovers.push(pid);
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const startTime = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
    await writeFile(path.join(data, 'install.json'), JSON.stringify({
      commandId: 'cmd-reused', version: '6.6.0', previous: '6.1.0', phase: 'applying',
      hook: { name: 'hooks/apply', pgid: pid, startTime: startTime - 100, bootId },
    }));
    const restarted = await start('orphan-reused', [], false);
    assert.match(restarted.agent.logs(), /agent restarted during an install; rolled back/);
    assert.match(restarted.agent.logs(), new RegExp(`"msg":"the process group the interrupted hook had is another program's now; left alone","agent":"orphan-reused","hook":"hooks/apply","pgid":${pid}`));
    assert.ok(alive(pid), 'the unrelated process still runs');
  });
});

describe('a damaged install journal', () => {
  it('stops the agent with what to do, and removes nothing it names', async () => {
    const { agent, data } = await start('journal-damaged');
    await agent.stop();
    // A folder beside the agent's data that a version of "../../victim" would name.
    const victim = path.join(d.work, 'victim');
    await mkdir(victim, { recursive: true });
    await writeFile(path.join(victim, 'keep.txt'), 'keep\n');
    const remedy = `an install was under way when the agent stopped; check that ${path.join(data, 'current')} points at the release that should run (or is absent, for the version the server had first), then remove the file`;
    const cases: [string, string][] = [
      ['{"commandId": "cmd-12345678", "version": "6.', 'it is not JSON: Unterminated string in JSON at position 44'],
      [JSON.stringify({ commandId: 'cmd-12345678', version: '../../victim', previous: '6.1.0', phase: 'applying' }), 'version: not a version'],
      [JSON.stringify({ commandId: 'cmd-12345678', version: '6.9.0', previous: '6.1.0', phase: 'applying', hook: { name: 'hooks/apply', pgid: 'all' } }), 'hook.pgid: Invalid input: expected number, received string'],
    ];
    for (const [content, reason] of cases) {
      await writeFile(path.join(data, 'install.json'), content);
      const { code, output } = await runAgentToExit(['--master', d.master.url, '--name', 'journal-damaged', '--mode', 'mailbox', '--data', data, '--trust', d.pki.root, '--initial-version', '6.1.0']);
      assert.equal(code, 2, output);
      assert.equal(output, `propagator: ${path.join(data, 'install.json')} is damaged (${reason}): ${remedy}\n`);
    }
    assert.equal(await readFile(path.join(victim, 'keep.txt'), 'utf8'), 'keep\n');
  });
});

describe('a hook that leaves a service running', () => {
  it('ends when its own process exits; the service keeps running, also across an agent restart', async () => {
    const { agent, data } = await start('service-1', ['--hook-timeout', '60']);
    // The background process keeps the hook's stdout and stderr open.
    const command = await apply(agent.serverId, await makeRelease(d.work, d.pki.good.rsa, '6.7.0', { apply: 'sleep 300 & echo $! > ../../service.pid; echo "service started"; exit 0' }));
    const result = await d.finished(command.id, 45_000);
    const pid = Number(await readFile(path.join(data, 'service.pid'), 'utf8'));
    leftovers.push(pid);
    assert.deepEqual([result.state, result.message, result.versionAfter], ['succeeded', 'installed watchdoc 6.7.0', '6.7.0']);
    assert.ok(alive(pid), 'the service the hook started still runs');
    assert.match(agent.logs(), /"msg":"hooks\/apply ended but left processes holding its output; they keep running, their output is no longer read","agent":"service-1","version":"6.7.0"/);
    assert.equal(await exists(path.join(data, 'install.json')), false, 'the install is over');

    await agent.stop('SIGKILL');
    await start('service-1', [], false);
    assert.ok(alive(pid), 'a restart does not touch the service of a finished install');
  });

  it('reports a failing hook at once with its output, though it left a process behind', async () => {
    const { agent, data } = await start('service-2', ['--hook-timeout', '60']);
    const command = await apply(agent.serverId, await makeRelease(d.work, d.pki.good.rsa, '6.8.0', { apply: 'sleep 300 & echo $! > ../../stray.pid; echo "port 631 in use" >&2; exit 4' }));
    const result = await d.finished(command.id, 45_000);
    leftovers.push(Number(await readFile(path.join(data, 'stray.pid'), 'utf8')));
    assert.deepEqual([result.state, result.message], ['failed', 'hooks/apply failed (exit 4): port 631 in use; 6.1.0 is still installed']);
  });
});
