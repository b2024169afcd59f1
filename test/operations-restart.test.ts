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

describe('a master restarted after its targets\' deadlines passed', () => {
  it('takes the results the agents held through the outage instead of timing their targets out', async () => {
    const port = await freePort();
    const args = ['--data', path.join(work, 'master'), '--trust', pki.root, '--port', String(port), '--auto-accept', '--product-version', '9.0.0',
      '--deadline-bidirectional', '6', '--deadline-mailbox', '6'];
    const first = await startMasterProcess(args, env);
    processes.push(first);
    const agents = await Promise.all((['mailbox', 'bidirectional'] as const).map(async (mode) => {
      const dir = path.join(work, `agent-${mode}`);
      const listen = mode === 'bidirectional' ? ['--host', '127.0.0.1', '--port', '0'] : [];
      const agent = await startAgentProcess(['--master', first.url, '--name', `restart-${mode}`, '--mode', mode, '--data', dir, '--trust', pki.root,
        '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1', '--heartbeat', '1', ...listen], { PROPAGATOR_ENROLL_TOKEN: TOKEN });
      processes.push(agent);
      return { agent, dir };
    }));

    // An install that takes a few seconds: the master dies while both agents run it.
    const form = new FormData();
    form.set('name', 'slow 6.2.0');
    form.set('package', await openAsBlob(await makeRelease(work, pki.good.ecP256, '6.2.0', { apply: 'sleep 3' })), 'slow.pkg');
    const pkg = await api<{ id: number }>(first.url, '/api/packages', { method: 'POST', body: form });
    const op = await api<{ id: number }>(first.url, '/api/operations', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ action: 'apply', package: pkg.id, servers: 'all' }),
    });
    const started = Date.now();
    const inHook = async (dir: string) => (await readFile(path.join(dir, 'hook-log.txt'), 'utf8').catch(() => '')).includes('hooks/apply');
    await waitFor(async () => (await Promise.all(agents.map(({ dir }) => inHook(dir)))).every(Boolean), 15_000, 'both agents to run hooks/apply');
    await first.stop('SIGKILL');

    // Both finish while the master is down, and the deadlines pass: their results wait on their disks.
    const installed = async (dir: string) => (await readlink(path.join(dir, 'current')).catch(() => '')) === path.join('releases', '6.2.0');
    await waitFor(async () => (await Promise.all(agents.map(({ dir }) => installed(dir)))).every(Boolean), 20_000, 'both installs to finish');
    await new Promise((r) => setTimeout(r, Math.max(0, started + 8_000 - Date.now())));

    const second = await startMasterProcess(args, env);
    processes.push(second);
    let report: Report = { state: 'running', targets: [] };
    await waitFor(async () => (report = await api<Report>(second.url, `/api/operations/${op.id}`)).state !== 'running', 60_000, 'the operation to end');
    assert.deepEqual(report.targets.map((t) => [t.server, t.state, t.message, t.versionAfter]), [
      ['restart-bidirectional', 'succeeded', 'installed watchdoc 6.2.0', '6.2.0'],
      ['restart-mailbox', 'succeeded', 'installed watchdoc 6.2.0', '6.2.0'],
    ]);
    assert.equal(report.state, 'succeeded');
    assert.match(second.stdout(), /"msg":"deadlines that passed while the master was away are held","graceSeconds":\d+/);
  });
});
