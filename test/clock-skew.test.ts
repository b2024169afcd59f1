import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { memoryLogger } from '../lib/logger.js';
import { CommandsRepo } from '../server/db/commands-repo.js';
import { ServersRepo } from '../server/db/servers-repo.js';
import { OffsetFilter } from '../server/clock-offset.js';
import { Dispatcher } from '../server/dispatcher.js';
import { startAgentProcess, type AgentProcess } from './helpers/agent-process.js';
import { ADMIN_PASSWORD, addServerRow, BASIC, createTestMaster, listenMaster } from './helpers/master.js';
import { startMasterProcess, waitFor, type MasterProcess } from './helpers/master-process.js';
import { makeRelease } from './helpers/releases.js';
import { tempDir } from './helpers/run.js';
import { SimulatedAgent } from './helpers/simulated-agent.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

/**
 * Agents whose clocks are wrong, as real processes under libfaketime (Debian's faketime package),
 * against a real master process whose clock is right.
 */
const TOKEN = 'clock-skew-enrollment-token-0123456789';
/** Debian puts it under the architecture's folder (x86_64-linux-gnu, aarch64-linux-gnu…). */
const LIBFAKETIME = (() => {
  const found = existsSync('/usr/lib') ? readdirSync('/usr/lib').map((d) => `/usr/lib/${d}/faketime/libfaketime.so.1`).find((f) => existsSync(f)) : undefined;
  return found ?? '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
})();

/** An agent's environment with its clock moved; node's timers keep the real monotonic clock. */
const skewed = (offset: string) => ({ LD_PRELOAD: LIBFAKETIME, FAKETIME: offset, FAKETIME_DONT_FAKE_MONOTONIC: '1' });

/** Why the tests cannot run here, or null: libfaketime must be there and must move node's clock. */
function noFaketime(): string | null {
  if (!existsSync(LIBFAKETIME)) return `needs libfaketime (${LIBFAKETIME}, Debian package faketime)`;
  const probe = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(Date.now()))'], { env: { ...process.env, ...skewed('+600s') }, encoding: 'utf8' });
  const moved = Number(probe.stdout) - Date.now();
  return moved > 590_000 && moved < 610_000 ? null : `libfaketime does not move node's clock here (moved by ${moved} ms)`;
}

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let master: MasterProcess;
let packageId: number;
const agents: AgentProcess[] = [];
const skip = noFaketime();

interface ServerJson { id: number; name: string; status: string; version: string | null; clockOffsetMs: number | null; clockWarning: string | null }
interface TargetJson { server: string; state: string; message: string; startedAt: string | null; finishedAt: string | null }

const api = async <T>(route: string, init: RequestInit = {}): Promise<T> => {
  const res = await fetch(`${master.url}${route}`, { ...init, headers: { authorization: BASIC, ...(init.body && typeof init.body === 'string' ? { 'content-type': 'application/json' } : {}), ...init.headers } });
  if (!res.ok) throw new Error(`${route}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
};
const server = async (id: number) => (await api<ServerJson[]>('/api/servers')).find((s) => s.id === id);

async function agent(name: string, mode: 'mailbox' | 'bidirectional', offset: string | null): Promise<AgentProcess> {
  const a = await startAgentProcess(['--master', master.url, '--name', name, '--mode', mode, '--data', path.join(work, name), '--trust', pki.root,
    '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1', '--heartbeat', '1', ...(mode === 'bidirectional' ? ['--host', '127.0.0.1', '--port', '0'] : [])],
  { PROPAGATOR_ENROLL_TOKEN: TOKEN, ...(offset ? skewed(offset) : {}) });
  agents.push(a);
  return a;
}

/** Starts an operation on one server; its target once it has ended. */
async function operate(action: 'propagate' | 'apply', serverId: number): Promise<{ target: TargetJson; startedBefore: number; endedAfter: number }> {
  const startedBefore = Date.now();
  const { id } = await api<{ id: number }>('/api/operations', { method: 'POST', body: JSON.stringify({ action, package: packageId, servers: [serverId] }) });
  let target: TargetJson | undefined;
  await waitFor(async () => {
    target = (await api<{ targets: TargetJson[] }>(`/api/operations/${id}`)).targets[0];
    return target !== undefined && !['pending', 'running'].includes(target.state);
  }, 40_000, `operation ${id} to end`).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}; its target: ${JSON.stringify(target)}`);
  });
  return { target: target as TargetJson, startedBefore, endedAfter: Date.now() };
}

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  // Certificates issued an hour ago, as real ones were: an agent whose clock is 10 minutes behind
  // would find certificates issued seconds ago not valid yet (rightly so).
  if (!skip) Object.assign(process.env, { LD_PRELOAD: LIBFAKETIME, FAKETIME: '-1h' });
  try {
    pki = await createTestPki(path.join(work, 'pki'));
  } finally {
    delete process.env.LD_PRELOAD;
    delete process.env.FAKETIME;
  }
  master = await startMasterProcess(['--data', path.join(work, 'master'), '--trust', pki.root, '--auto-accept', '--product-version', '6.2.0', '--deadline-bidirectional', '60', '--log-level', 'debug'],
    { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD, PROPAGATOR_ENROLL_TOKEN: TOKEN });
  const file = await makeRelease(work, pki.good.rsa, '6.2.0');
  const form = new FormData();
  form.set('name', 'Watchdoc 6.2.0');
  form.set('package', new Blob([await readFile(file)]), 'watchdoc-6.2.0.pkg');
  packageId = (await api<{ id: number }>('/api/packages', { method: 'POST', body: form })).id;
});

after(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  await master.stop();
  await cleanup();
});

describe('a bidirectional agent whose clock is wrong', { skip: skip ?? false }, () => {
  for (const [offset, word] of [['+600s', 'ahead of'], ['-600s', 'behind']] as const) {
    it(`${offset}: the target fails with the slave's own reason, and Print servers shows the offset with a warning`, async () => {
      const a = await agent(`bidi${offset[0] === '+' ? 'ahead' : 'behind'}`, 'bidirectional', offset);
      const { target } = await operate('propagate', a.serverId);
      assert.equal(target.state, 'failed', target.message);
      assert.match(target.message, new RegExp(`^the slave's clock is (59[5-9]|60[0-5]) s ${word} the master's`));
      assert.doesNotMatch(target.message, /cannot reach/);

      const row = await server(a.serverId);
      assert.equal(row?.status, 'online');
      assert.ok(Math.abs(Math.abs(row?.clockOffsetMs ?? 0) - 600_000) < 5_000, `offset ${row?.clockOffsetMs}`);
      assert.equal(Math.sign(row?.clockOffsetMs ?? 0), offset[0] === '+' ? 1 : -1);
      assert.match(row?.clockWarning ?? '', new RegExp(`clock is (59[5-9]|60[0-5]) s ${word} the master's`));
      const page = await (await fetch(`${master.url}/servers`, { headers: { authorization: BASIC } })).text();
      const line = page.split('<tr').find((tr) => tr.includes(`data-server-id="${a.serverId}"`)) ?? '';
      assert.match(line, /class="clock warn"/);
      assert.match(line, new RegExp(`(59[5-9]|60[0-5]) s ${word}`));
    });
  }
});

describe('a mailbox agent whose clock is wrong', { skip: skip ?? false }, () => {
  it('carries on when its clock is stepped by 10 minutes mid-session (as NTP does), and the new offset shows', async () => {
    // libfaketime reads the offset from this file (at most once a second), so the test can move it.
    const clockFile = path.join(work, 'stepped-clock');
    await writeFile(clockFile, '+0s\n');
    const a = await startAgentProcess(['--master', master.url, '--name', 'stepped', '--mode', 'mailbox', '--data', path.join(work, 'stepped'), '--trust', pki.root,
      '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1'],
    { PROPAGATOR_ENROLL_TOKEN: TOKEN, LD_PRELOAD: LIBFAKETIME, FAKETIME_TIMESTAMP_FILE: clockFile, FAKETIME_CACHE_DURATION: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1' });
    agents.push(a);
    await waitFor(async () => (await server(a.serverId))?.clockOffsetMs !== null, 10_000, 'a first offset');
    assert.ok(Math.abs((await server(a.serverId))?.clockOffsetMs ?? Infinity) < 5000);
    const refusals = () => master.stdout().split('\n').filter((l) => l.includes('"path":"/api/agent/report","status":401')).length;
    const refusedBefore = refusals();
    await writeFile(clockFile, '+600s\n');
    await waitFor(async () => Math.abs(((await server(a.serverId))?.clockOffsetMs ?? 0) - 600_000) < 5000, 15_000, 'the new offset');
    // Its call stamped from the old offset was refused as too far from the master's time; it
    // opened a new session at once, learning the new offset, and carries on.
    assert.equal(refusals(), refusedBefore + 1);
    assert.doesNotMatch(a.logs(), /the master refused this agent/);
    const { target } = await operate('apply', a.serverId);
    assert.equal(target.state, 'succeeded', target.message);
  });

  for (const offset of ['+600s', '-600s']) {
    it(`${offset}: works end to end; the report's times are the master's, and the offset is shown`, async () => {
      const a = await agent(`mailbox${offset[0] === '+' ? 'ahead' : 'behind'}`, 'mailbox', offset);
      const { target, startedBefore, endedAfter } = await operate('apply', a.serverId);
      assert.equal(target.state, 'succeeded', target.message);
      for (const at of [target.startedAt, target.finishedAt]) {
        const t = Date.parse(at ?? '');
        assert.ok(t >= startedBefore - 1000 && t <= endedAfter + 1000, `${at} is not between ${new Date(startedBefore).toISOString()} and ${new Date(endedAfter).toISOString()}`);
      }
      await waitFor(async () => (await server(a.serverId))?.version === '6.2.0', 10_000, 'the new version to show');
      const row = await server(a.serverId);
      assert.ok(Math.abs(Math.abs(row?.clockOffsetMs ?? 0) - 600_000) < 5_000, `offset ${row?.clockOffsetMs}`);
      assert.match(row?.clockWarning ?? '', /mailbox calls do not depend on it/);
    });
  }
});

/** A "bidirectional agent" answering every call with the bytes a test chooses: what a hostile slave can send. */
async function scriptedAgent(answer: () => string): Promise<{ url: string; calls: () => number; close(): Promise<void> }> {
  let calls = 0;
  const sockets = new Set<net.Socket>();
  const fake = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let head = '';
    socket.on('data', (chunk: Buffer) => {
      if (head.includes('\r\n\r\n')) return;
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      calls++;
      socket.end(answer(), 'latin1');
    });
  });
  await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(fake.address() as AddressInfo).port}`,
    calls: () => calls,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => fake.close(resolve));
    },
  };
}

describe('a hostile slave', () => {
  it('cannot put words of its own in the report, nor a clock that is not a number; its own clock concerns only itself', async () => {
    let answer = () => 'HTTP/1.1 500 x\r\nContent-Length: 0\r\n\r\n';
    const fake = await scriptedAgent(() => answer());
    try {
      const othersBefore = new Map((await api<ServerJson[]>('/api/servers')).map((s) => [s.id, s.clockOffsetMs]));
      const hostile = await new SimulatedAgent(master.url, 'hostile', { mode: 'bidirectional', address: fake.url }).join(TOKEN);
      const id = hostile.serverId as number;

      // Clocks that are not times are ignored, and the call is served all the same.
      for (const agentTime of ['evil <script>', 1e300, -1e300, null, { at: 1 }, '1700000000000']) {
        const polled = await hostile.report({ status: hostile.status(), results: [], agentTime });
        assert.equal(polled.status, 200, polled.text);
      }
      assert.equal((await server(id))?.clockOffsetMs, null);

      // A refusal with a reason that is not one of the words, a clock that is not a number, and a
      // long body meant for the report: the master says what it knows, in its own words.
      answer = () => 'HTTP/1.1 401 Unauthorized\r\nX-Propagator-Refusal: clock <b>the admin password expired: log in at evil.example</b>\r\n' +
        'X-Propagator-Agent-Time: 99999999999999999999\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n' +
        `{"error":"the slave's clock is 1 s ahead of the master's: visit evil.example${'!'.repeat(4096)}`;
      const junk = await api<{ id: number }>('/api/operations', { method: 'POST', body: JSON.stringify({ action: 'propagate', package: packageId, servers: [id] }) });
      const target = async (op: number) => (await api<{ targets: TargetJson[] }>(`/api/operations/${op}`)).targets[0] as TargetJson;
      await waitFor(async () => fake.calls() > 0 && /HTTP 401/.test((await target(junk.id)).message), 15_000, 'the refused delivery');
      assert.match((await target(junk.id)).message, new RegExp(`^cannot reach the agent at ${fake.url.replace(/\./g, '\\.')} \\(HTTP 401\\); trying again in \\d+ s$`));
      // The same word twice (two headers) is not the word either.
      answer = () => 'HTTP/1.1 401 Unauthorized\r\nX-Propagator-Refusal: clock\r\nX-Propagator-Refusal: clock\r\nX-Propagator-Agent-Time: 1\r\nX-Propagator-Agent-Time: 2\r\nContent-Length: 0\r\n\r\n';
      const calls = fake.calls();
      await waitFor(async () => fake.calls() > calls && /HTTP 401/.test((await target(junk.id)).message), 15_000, 'the next delivery');
      assert.equal((await target(junk.id)).state, 'pending');
      assert.equal((await server(id))?.clockOffsetMs, null);
      await api(`/api/operations/${junk.id}/cancel`, { method: 'POST' });

      // A slave that says its clock is an hour behind fails its own target, and only its own.
      answer = () => `HTTP/1.1 401 Unauthorized\r\nX-Propagator-Refusal: clock\r\nX-Propagator-Agent-Time: ${Date.now() - 3_600_000}\r\nContent-Length: 0\r\n\r\n`;
      const behind = await api<{ id: number }>('/api/operations', { method: 'POST', body: JSON.stringify({ action: 'propagate', package: packageId, servers: [id] }) });
      await waitFor(async () => (await target(behind.id)).state === 'failed', 15_000, 'the target to fail');
      assert.match((await target(behind.id)).message, /^the slave's clock is 3600 s behind the master's: it refuses the master's calls when the clocks differ by more than 300 s; set its clock \(NTP\), then retry$/);
      const row = await server(id);
      assert.ok(Math.abs((row?.clockOffsetMs ?? 0) + 3_600_000) < 2000, `offset ${row?.clockOffsetMs}`);
      assert.match(row?.clockWarning ?? '', /^the slave's clock is 3600 s behind the master's: it refuses the master's calls when the clocks differ by more than 300 s; set its clock \(NTP\)$/);
      for (const other of (await api<ServerJson[]>('/api/servers')).filter((s) => s.id !== id)) {
        const was = othersBefore.get(other.id) ?? null;
        assert.ok(was === null ? other.clockOffsetMs === null : Math.abs((other.clockOffsetMs ?? 0) - was) < 2000, `${other.name}: ${was} → ${other.clockOffsetMs}`);
      }
    } finally {
      await fake.close();
    }
  });
});

describe('measuring the offset', () => {
  it('writes it when it moves by more than a second, not at every call', async () => {
    const m = await createTestMaster(pki.root, { enrollToken: TOKEN, autoAccept: true });
    await m.services.settings.init({ product: null, productVersion: null, enrollToken: TOKEN });
    const served = await listenMaster(m);
    try {
      // Every write of the column, counted by the database itself.
      await m.db.run('CREATE TABLE clock_writes (n INTEGER NOT NULL)');
      await m.db.run('INSERT INTO clock_writes VALUES (0)');
      if (m.db.engine === 'sqlite') {
        await m.db.run('CREATE TRIGGER count_clock_writes AFTER UPDATE OF clock_offset_ms ON servers BEGIN UPDATE clock_writes SET n = n + 1; END');
      } else {
        await m.db.run('CREATE FUNCTION count_clock_writes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE clock_writes SET n = n + 1; RETURN NEW; END $$');
        await m.db.run('CREATE TRIGGER count_clock_writes AFTER UPDATE OF clock_offset_ms ON servers FOR EACH ROW EXECUTE FUNCTION count_clock_writes()');
      }
      const writes = async () => {
        await m.services.agents.flush();
        return (await m.db.get<{ n: number }>('SELECT n FROM clock_writes'))?.n;
      };
      const sim = await new SimulatedAgent(served.url, 'counted').join(TOKEN);
      const poll = async (aheadMs: number | undefined) => {
        const answer = await sim.report({ status: sim.status(), results: [], ...(aheadMs === undefined ? {} : { agentTime: Date.now() + aheadMs }) });
        assert.equal(answer.status, 200, answer.text);
      };
      await poll(undefined);
      assert.equal(await writes(), 0, 'an agent that does not say its time');
      for (let i = 0; i < 30; i++) await poll(600_000);
      assert.equal(await writes(), 1);
      for (let i = 0; i < 30; i++) await poll(600_000 + (i % 2) * 400);
      assert.equal(await writes(), 1, 'moves within a second are not written');
      await poll(605_000);
      assert.equal(await writes(), 2);
      // Calls arriving seconds late (a master slowed down by load) seem to show a lower offset.
      for (let i = 0; i < 30; i++) await poll(605_000 - 3000 - (i % 3) * 1000);
      assert.equal(await writes(), 2, 'late calls are not a clock set back');
      const row = (await supertest(m.app).get('/api/servers').set('Authorization', BASIC).expect(200)).body.find((s: ServerJson) => s.name === 'counted') as ServerJson;
      assert.ok(Math.abs((row.clockOffsetMs ?? 0) - 605_000) < 1000, `offset ${row.clockOffsetMs}`);
      assert.match(row.clockWarning ?? '', /^the slave's clock is 605 s ahead of the master's: its mailbox calls do not depend on it/);
    } finally {
      await served.close();
      await m.cleanup();
    }
  });
});

describe('which measured offsets are written', () => {
  it('a rise at once, a fall only when every call shows it for the hold time, as the highest of them', () => {
    const filter = new OffsetFilter(60_000);
    assert.equal(filter.next(1, -250, null, 0), -250, 'the first measurement');
    assert.equal(filter.next(1, 800, -250, 1000), 800, 'a rise of more than a second');
    assert.equal(filter.next(1, 1500, 800, 2000), null, 'within a second');
    // Late calls, then one on time: not a fall.
    assert.equal(filter.next(1, -4000, 800, 3000), null);
    assert.equal(filter.next(1, -9000, 800, 50_000), null);
    assert.equal(filter.next(1, 700, 800, 70_000), null);
    assert.equal(filter.next(1, -5000, 800, 80_000), null, 'a new streak starts here');
    // Set back by about 600 s: every call shows it for a minute; the highest of its second half
    // (the least delayed, and after the late call that began the streak) is taken.
    assert.equal(filter.next(1, -599_800, 800, 90_000), null);
    assert.equal(filter.next(1, -599_200, 800, 120_000), null);
    assert.equal(filter.next(1, -599_900, 800, 140_001), -599_200);
    assert.equal(filter.next(1, -599_500, -599_200, 141_000), null);
    // Calls a minute apart (an idle mailbox): the second one decides.
    assert.equal(filter.next(3, -70_000, 0, 0), null);
    assert.equal(filter.next(3, -69_000, 0, 61_000), -69_000);
    // Servers are apart, and a forgotten one starts over.
    assert.equal(filter.next(2, 5000, null, 141_000), 5000);
    filter.next(1, -700_000, -599_200, 150_000);
    filter.forget(1);
    assert.equal(filter.next(1, -700_000, -599_200, 215_000), null, 'its streak was forgotten');
  });
});

describe('a redelivery refused for the clock', () => {
  it('leaves the target to run: the slave may hold the command already, and its result still comes', async () => {
    const m = await createTestMaster(pki.root);
    let answer = () => `HTTP/1.1 202 Accepted\r\nX-Propagator-Agent-Time: ${Date.now()}\r\nContent-Length: 2\r\n\r\n{}`;
    const fake = await scriptedAgent(() => answer());
    // Its own dispatcher, redelivering after 300 ms of silence instead of a minute.
    const dispatcher = new Dispatcher(new CommandsRepo(m.db), new ServersRepo(m.db), m.services.masterKey, memoryLogger(), { concurrency: 1, redeliverAfterMs: 300, tickMs: 100 });
    try {
      const serverId = await addServerRow(m.db, 'redelivered', { mode: 'bidirectional', address: fake.url });
      const file = await makeRelease(work, pki.good.rsa, '6.3.0');
      const pkg = (await supertest(m.app).post('/api/packages').set('Authorization', BASIC).field('name', 'redelivered').attach('package', file).expect(201)).body.id as number;
      const { id } = await m.services.commands.enqueue({ serverId, type: 'propagate', packageId: pkg });
      dispatcher.start();
      await waitFor(async () => (await m.services.commands.get(id)).state === 'delivered', 10_000, 'the delivery');
      assert.ok(Math.abs((await new ServersRepo(m.db).findById(serverId))?.clockOffsetMs ?? Infinity) < 2000, 'the offset its answer showed');
      answer = () => `HTTP/1.1 401 Unauthorized\r\nX-Propagator-Refusal: clock\r\nX-Propagator-Agent-Time: ${Date.now() + 600_000}\r\nContent-Length: 0\r\n\r\n`;
      await waitFor(async () => /clock/.test((await m.services.commands.get(id)).message), 10_000, 'the refused redelivery');
      const command = await m.services.commands.get(id);
      assert.equal(command.state, 'queued');
      assert.ok(command.deliveredAt);
      assert.match(command.message, /^the slave's clock is 600 s ahead of the master's: it refuses the master's calls when the clocks differ by more than 300 s; set its clock \(NTP\); trying again in \d+ s$/);
      assert.ok(Math.abs(((await new ServersRepo(m.db).findById(serverId))?.clockOffsetMs ?? 0) - 600_000) < 2000);
      // Still refused at its deadline (an hour on, past any grace): it times out for its clock, not as unreachable.
      await dispatcher.stop();
      await m.services.engine.tick(new Date(Date.now() + 3600_000));
      const ended = await m.services.commands.get(id);
      assert.equal(ended.state, 'timedout');
      assert.equal(ended.message, "the slave refused the master's calls until the deadline: the slave's clock is 600 s ahead of the master's: it refuses the master's calls when the clocks differ by more than 300 s; set its clock (NTP)");
    } finally {
      await dispatcher.stop();
      await fake.close();
      await m.cleanup();
    }
  });
});

