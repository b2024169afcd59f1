import assert from 'node:assert/strict';
import { openAsBlob } from 'node:fs';
import { readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startAgentProcess, type AgentProcess } from './helpers/agent-process.js';
import { basic } from './helpers/http-request.js';
import { startMasterProcess, waitFor, type MasterProcess } from './helpers/master-process.js';
import { makeRelease } from './helpers/releases.js';
import { freePort, tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

const PASSWORD = 'restart-deadline-password-0123';
const TOKEN = 'restart-deadline-enrollment-token-0123456789';
const env = { PROPAGATOR_ADMIN_PASSWORD: PASSWORD, PROPAGATOR_ENROLL_TOKEN: TOKEN };
const auth = basic('admin', PASSWORD);

interface Report {
  state: string;
  targets: { server: string; state: string; message: string; versionAfter: string | null }[];
}

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
const processes: (MasterProcess | AgentProcess)[] = [];

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
});
after(async () => {
  await Promise.all(processes.map((p) => p.stop('SIGKILL')));
  await cleanup();
});

async function api<T>(url: string, route: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(`${url}${route}`, { ...init, headers: { authorization: auth, ...init.headers } });
  assert.ok(res.ok, `${route} answered ${res.status}`);
  return (await res.json()) as T;
}

/**
 * A master (deadlines of `deadlineS`) and two agents, one of each mode, that take an apply whose
 * hooks/apply lasts 3 s; the master is killed as soon as both run that hook.
 */
async function killedDuringApply(name: string, deadlineS: number) {
  const port = await freePort();
  const args = ['--data', path.join(work, name, 'master'), '--trust', pki.root, '--port', String(port), '--auto-accept', '--product-version', '9.0.0',
    '--deadline-bidirectional', String(deadlineS), '--deadline-mailbox', String(deadlineS)];
  const first = await startMasterProcess(args, env);
  processes.push(first);
  const agents = await Promise.all((['mailbox', 'bidirectional'] as const).map(async (mode) => {
    const dir = path.join(work, name, mode);
    const listen = mode === 'bidirectional' ? ['--host', '127.0.0.1', '--port', '0'] : [];
    const agent = await startAgentProcess(['--master', first.url, '--name', `${name}-${mode}`, '--mode', mode, '--data', dir, '--trust', pki.root,
      '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1', '--heartbeat', '1', ...listen], { PROPAGATOR_ENROLL_TOKEN: TOKEN });
    processes.push(agent);
    return { agent, dir };
  }));
  const form = new FormData();
  form.set('name', `${name} 6.2.0`);
  form.set('package', await openAsBlob(await makeRelease(path.join(work, name), pki.good.ecP256, '6.2.0', { apply: 'sleep 3' })), 'slow.pkg');
  const pkg = await api<{ id: number }>(first.url, '/api/packages', { method: 'POST', body: form });
  const op = await api<{ id: number }>(first.url, '/api/operations', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ action: 'apply', package: pkg.id, servers: 'all' }),
  });
  const startedAt = Date.now();
  const inHook = async (dir: string) => (await readFile(path.join(dir, 'hook-log.txt'), 'utf8').catch(() => '')).includes('hooks/apply');
  await waitFor(async () => (await Promise.all(agents.map(({ dir }) => inHook(dir)))).every(Boolean), 15_000, 'both agents to run hooks/apply');
  await first.stop('SIGKILL');
  const installed = async (dir: string) => (await readlink(path.join(dir, 'current')).catch(() => '')) === path.join('releases', '6.2.0');
  await waitFor(async () => (await Promise.all(agents.map(({ dir }) => installed(dir)))).every(Boolean), 20_000, 'both installs to finish');
  return { args, agents, opId: op.id, startedAt };
}

async function outcome(args: string[], opId: number): Promise<{ report: Report; master: MasterProcess }> {
  const master = await startMasterProcess(args, env);
  processes.push(master);
  let report: Report = { state: 'running', targets: [] };
  await waitFor(async () => (report = await api<Report>(master.url, `/api/operations/${opId}`)).state !== 'running', 90_000, 'the operation to end');
  return { report, master };
}

const SUCCEEDED = (name: string) => [
  [`${name}-bidirectional`, 'succeeded', 'installed watchdoc 6.2.0', '6.2.0'],
  [`${name}-mailbox`, 'succeeded', 'installed watchdoc 6.2.0', '6.2.0'],
];

describe('a master back from an outage', () => {
  it('takes the results the agents kept, although the deadlines passed while it was down', async () => {
    const { args, opId, startedAt } = await killedDuringApply('passed', 6);
    await new Promise((r) => setTimeout(r, Math.max(0, startedAt + 8_000 - Date.now())));
    const { report, master } = await outcome(args, opId);
    assert.deepEqual(report.targets.map((t) => [t.server, t.state, t.message, t.versionAfter]), SUCCEEDED('passed'));
    assert.equal(report.state, 'succeeded');
    assert.match(master.stdout(), /"msg":"the master was away: no target times out for a while","awaySeconds":\d+,"graceSeconds":\d+/);
  });

  it('takes them when the deadlines pass just after its return, while the agents still back off', async () => {
    // 45 s: the master is back before it, and the agents' next call (after a 32 s backoff) after it.
    const { args, agents, opId, startedAt } = await killedDuringApply('backoff', 45);
    const backingOff = (logs: string) => /"msg":"cannot reach the master; backing off".*"delayMs":32000/.test(logs);
    await waitFor(async () => agents.every(({ agent }) => backingOff(agent.logs())), 45_000, 'both agents to back off 32 s');
    assert.ok(Date.now() < startedAt + 44_000, 'the master comes back before the deadline');
    const { report } = await outcome(args, opId);
    assert.deepEqual(report.targets.map((t) => [t.server, t.state, t.message, t.versionAfter]), SUCCEEDED('backoff'));
  });
});
