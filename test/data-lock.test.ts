import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { runAgentToExit, spawnAgentProcess, startAgentProcess, type AgentProcess } from './helpers/agent-process.js';
import { openTestDomain, type TestDomain } from './helpers/domain.js';
import { ADMIN_PASSWORD, BASIC } from './helpers/master.js';
import { multipartHead, multipartTail, openUpload, startMasterProcess, waitFor, type MasterProcess } from './helpers/master-process.js';
import { makePackage } from './helpers/openssl-package.js';
import { BIN } from './helpers/run.js';

const TOKEN = 'lock-enrollment-token-0123456789';
const env = { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD };

let d: TestDomain;
let work: string;

before(async () => {
  d = await openTestDomain(TOKEN);
  work = d.work;
});
after(() => d.close());

interface Outcome {
  pid: number;
  /** The URL it announced, or null when it exited first. */
  url: string | null;
  code: number | null;
  stderr: string;
  stop(): Promise<void>;
}

/** Starts a master and waits until it either announces its URL or exits. */
function masterOutcome(data: string): Promise<Outcome> {
  const child = spawn(process.execPath, [BIN, 'master', '--host', '127.0.0.1', '--port', '0', '--data', data, '--trust', d.pki.root], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve) => {
    const stop = async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    };
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
      const url = /Propagator master: (\S+)/.exec(stderr)?.[1];
      if (url) resolve({ pid: child.pid ?? 0, url, code: null, stderr, stop });
    });
    void exited.then((code) => resolve({ pid: child.pid ?? 0, url: null, code, stderr, stop }));
  });
}

const tmpFiles = (data: string) => readdir(path.join(data, 'tmp'));

describe('one master per data folder', () => {
  it('refuses a second master on the same folder, and the first one\'s upload in progress survives', async () => {
    const data = path.join(work, 'master-two');
    const first = await startMasterProcess(['--data', data, '--trust', d.pki.root], env);
    try {
      const packageFile = await makePackage(work, 'lock-upload', { publisher: d.pki.good.rsa, payloadDir: path.join(d.pki.dir, 'ca') });
      const bytes = await readFile(packageFile);
      const { request, response } = openUpload(first.url, BASIC);
      request.write(multipartHead('Uploaded while another master tried to start'));
      request.write(bytes.subarray(0, 1024));
      await waitFor(async () => (await tmpFiles(data)).length === 1, 10_000, 'the upload to start');

      const second = await masterOutcome(data);
      await second.stop();
      assert.equal(second.url, null, 'the second master must not start');
      assert.equal(second.code, 2);
      assert.equal(second.stderr, `propagator: another master (pid ${first.child.pid}) uses ${data}\n`);

      // An agent pointed at the master's folder by mistake is refused the same way.
      const agent = await runAgentToExit(['--master', first.url, '--name', 'lock-misplaced', '--mode', 'mailbox', '--data', data, '--trust', d.pki.root]);
      assert.equal(agent.code, 2);
      assert.match(agent.output, new RegExp(`propagator: a master \\(pid ${first.child.pid}\\) uses ${data.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\n`));

      assert.equal((await tmpFiles(data)).length, 1, 'the upload in progress is still there');
      request.end(Buffer.concat([bytes.subarray(1024), Buffer.from(multipartTail)]));
      const result = await response;
      assert.equal(result.status, 201, result.body);
      const list = (await (await fetch(`${first.url}/api/packages`, { headers: { authorization: BASIC } })).json()) as { name: string; state: string }[];
      assert.deepEqual(list.map((p) => [p.name, p.state]), [['Uploaded while another master tried to start', 'valid']]);
      assert.doesNotMatch(first.stdout(), /store recovered after an unclean stop/);
    } finally {
      await first.stop();
    }
  });

  it('starts after a master was killed (SIGKILL), and is not fooled by a live pid in the stale lock', async () => {
    const data = path.join(work, 'master-killed');
    const killed = await startMasterProcess(['--data', data, '--trust', d.pki.root], env);
    await killed.stop('SIGKILL');
    const holder = JSON.parse(await readFile(path.join(data, 'propagator.lock.json'), 'utf8')) as { pid: number; role: string };
    assert.deepEqual([holder.role, holder.pid], ['master', killed.child.pid], 'the kill left its lock record behind');
    let again: MasterProcess = await startMasterProcess(['--data', data, '--trust', d.pki.root], env);
    assert.equal((await fetch(`${again.url}/health`)).status, 200);
    await again.stop('SIGKILL');
    // The same pid living on as another program (a reused pid): this very test process.
    await writeFile(path.join(data, 'propagator.lock.json'), JSON.stringify({ ...holder, pid: process.pid }));
    again = await startMasterProcess(['--data', data, '--trust', d.pki.root], env);
    try {
      const record = JSON.parse(await readFile(path.join(data, 'propagator.lock.json'), 'utf8')) as { pid: number };
      assert.equal(record.pid, again.child.pid);
    } finally {
      await again.stop();
    }
  });

  it('says what to do when the lock file is not one it made', async () => {
    const data = path.join(work, 'master-bad-lock');
    await mkdir(data, { recursive: true });
    await writeFile(path.join(data, 'propagator.lock'), 'a file someone put here\n');
    const refused = await masterOutcome(data);
    await refused.stop();
    assert.equal(refused.code, 2);
    assert.equal(refused.stderr, `propagator: cannot lock the data folder ${data} with ${path.join(data, 'propagator.lock')} (SQLITE_NOTADB: file is not a database): if it is not a file Propagator made, remove it\n`);
    assert.deepEqual(await readdir(data), ['propagator.lock'], 'nothing else touched');
    await rm(path.join(data, 'propagator.lock'));
    const started = await masterOutcome(data);
    await started.stop();
    assert.ok(started.url, started.stderr);
  });

  it('lets exactly one of two masters started at the same moment run', async () => {
    for (let round = 0; round < 3; round++) {
      const data = path.join(work, `master-race-${round}`);
      const outcomes = await Promise.all([masterOutcome(data), masterOutcome(data)]);
      await Promise.all(outcomes.map((o) => o.stop()));
      const winners = outcomes.filter((o) => o.url !== null);
      const losers = outcomes.filter((o) => o.url === null);
      assert.equal(winners.length, 1, `round ${round}: ${outcomes.map((o) => o.stderr).join(' | ')}`);
      assert.equal(losers[0]?.code, 2);
      assert.equal(losers[0]?.stderr, `propagator: another master (pid ${winners[0]?.pid}) uses ${data}\n`);
    }
  });
});

describe('one agent per data folder', () => {
  const agentArgs = (name: string, data: string) => ['--master', d.master.url, '--name', name, '--mode', 'mailbox', '--data', data, '--trust', d.pki.root,
    '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1'];

  it('refuses a second agent on the same folder; the first keeps working', async () => {
    const data = path.join(work, 'agent-two');
    const first = await startAgentProcess(agentArgs('lock-agent', data), { PROPAGATOR_ENROLL_TOKEN: TOKEN });
    d.agents.push(first);
    const second = await runAgentToExit(agentArgs('lock-agent', data), { PROPAGATOR_ENROLL_TOKEN: TOKEN });
    assert.equal(second.code, 2);
    assert.equal(second.output, `propagator: another agent (pid ${first.child.pid}) uses ${data}\n`);
    const seen = async () => (await d.m.db.get<{ last_seen: string }>('SELECT last_seen FROM servers WHERE id = ?', [first.serverId]))?.last_seen ?? '';
    const before = await seen();
    await waitFor(async () => (await seen()) > before, 10_000, 'the first agent to call again');
    assert.equal(first.child.exitCode, null);
  });

  it('starts after an agent was killed (SIGKILL)', async () => {
    const data = path.join(work, 'agent-killed');
    const killed = await startAgentProcess(agentArgs('lock-killed', data), { PROPAGATOR_ENROLL_TOKEN: TOKEN });
    await killed.stop('SIGKILL');
    const again = await startAgentProcess(agentArgs('lock-killed', data));
    d.agents.push(again);
    assert.equal(again.serverId, killed.serverId);
  });

  it('lets exactly one of two agents started at the same moment run', async () => {
    for (let round = 0; round < 3; round++) {
      const data = path.join(work, `agent-race-${round}`);
      const name = `lock-race-${round}`;
      const starting = [spawnAgentProcess(agentArgs(name, data), { PROPAGATOR_ENROLL_TOKEN: TOKEN }), spawnAgentProcess(agentArgs(name, data), { PROPAGATOR_ENROLL_TOKEN: TOKEN })];
      const settled = await Promise.allSettled(starting.map((s) => s.started));
      const winners = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : [])) as AgentProcess[];
      d.agents.push(...winners);
      assert.equal(winners.length, 1, `round ${round}: ${starting.map((s) => s.logs()).join('\n---\n')}`);
      const loser = starting.find((s) => s.child !== winners[0]?.child);
      assert.equal(loser?.child.exitCode, 2);
      assert.equal(loser?.logs(), `propagator: another agent (pid ${winners[0]?.child.pid}) uses ${data}\n`);
      const servers = (await supertest(d.m.app).get('/api/servers').set('Authorization', BASIC)).body as { name: string }[];
      assert.equal(servers.filter((s) => s.name === name).length, 1);
    }
  });
});
