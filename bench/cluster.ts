import os from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import { makePackage } from '../test/helpers/openssl-package.js';
import { postgresUnavailable, startPostgres, type PostgresServer } from '../test/helpers/postgres.js';
import type { BenchContext } from './run.js';
import { pacedLoad } from './paced-load.js';
import { agentHeaders, enrollAgents, type SimulatedAgent } from './simulated-agents.js';
import { cpuSeconds, pool, round, seconds, sh, startBenchMaster, type BenchMaster, type Figure } from './support.js';

const TOKEN = 'bench-enroll-token-0123456789';
const ENV = { PROPAGATOR_ADMIN_PASSWORD: 'bench-password', PROPAGATOR_ENROLL_TOKEN: TOKEN };
const AUTH = { authorization: `Basic ${Buffer.from('admin:bench-password').toString('base64')}` };

function run(options: autocannon.Options): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    autocannon(options, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

/** Polls as agents with nothing queued send them, each with a fresh nonce and the agent's clock. */
function polls(agents: SimulatedAgent[]): autocannon.Request {
  const prepared = agents.map((a) => ({ agent: a, head: JSON.stringify({ status: a.status, results: [] }).slice(0, -1) }));
  let next = 0;
  return {
    method: 'POST',
    path: '/api/agent/report',
    setupRequest: (request: autocannon.Request) => {
      const p = prepared[next++ % prepared.length] as (typeof prepared)[number];
      const body = `${p.head},"agentTime":${Date.now()}}`;
      return { ...request, headers: agentHeaders(p.agent, body), body };
    },
  };
}

/** Polls per second and master CPU per poll, the load shared by the given masters (as a balancer would). */
async function measurePolls(masters: BenchMaster[], agents: SimulatedAgent[], duration: number): Promise<{ rate: number; cpuMsPerPoll: number; p99: number }> {
  const share = Math.ceil(agents.length / masters.length);
  const requests = masters.map((_, i) => polls(agents.slice(i * share, (i + 1) * share)));
  // Warm-up: every agent's credentials cached, the routes compiled.
  await Promise.all(masters.map((m, i) => run({ url: m.url, connections: 16, amount: share, requests: [requests[i] as autocannon.Request] })));
  const cpuBefore = await Promise.all(masters.map((m) => cpuSeconds(m.child.pid as number)));
  const results = await Promise.all(masters.map((m, i) => run({ url: m.url, connections: 32 / masters.length, duration, requests: [requests[i] as autocannon.Request] })));
  const cpuAfter = await Promise.all(masters.map((m) => cpuSeconds(m.child.pid as number)));
  for (const r of results) if (r.non2xx > 0 || r.errors > 0) throw new Error(`polls: ${r.non2xx} non-2xx answers, ${r.errors} errors`);
  const total = results.reduce((n, r) => n + r.requests.total, 0);
  const cpu = cpuAfter.reduce((n, c, i) => n + c - (cpuBefore[i] as number), 0);
  return { rate: results.reduce((n, r) => n + r.requests.average, 0), cpuMsPerPoll: (cpu * 1000) / total, p99: Math.max(...results.map((r) => r.latency.p99)) };
}

async function pacedP99(master: BenchMaster, agents: SimulatedAgent[], duration: number): Promise<number> {
  const request = polls(agents);
  const paced = await pacedLoad({
    url: master.url, rate: 500, seconds: duration,
    request: () => {
      const r = (request.setupRequest as (r: autocannon.Request) => autocannon.Request)(request);
      return { method: 'POST', path: '/api/agent/report', headers: r.headers as Record<string, string>, body: r.body as string };
    },
  });
  if (paced.failed > 0) throw new Error(`paced polls: ${paced.failed} failed`);
  return paced.p99;
}

/** Pins a process to one core, when the machine has cores to spare for the others. */
async function pin(pid: number, core: number): Promise<void> {
  await sh('taskset', ['-cp', String(core), String(pid)]);
}

/** An apply to `count` simulated mailbox agents on one PostgreSQL master: its CPU and the database's growth per target. */
async function operation(ctx: BenchContext, pg: PostgresServer, count: number): Promise<{ cpuMsPerTarget: number; bytesPerTarget: number; wall: number }> {
  const url = await pg.createDatabase('bench_operation');
  const database = new URL(url).pathname.slice(1);
  const master = await startBenchMaster(['--data', path.join(ctx.work, 'cluster-operation'), '--database', url, '--trust', ctx.trust, '--product-version', '1.0', '--auto-accept'], ENV);
  try {
    const agents = await enrollAgents(master.url, TOKEN, count);
    const file = await makePackage(ctx.work, 'cluster-scale', { publisher: ctx.publisher, payloadDir: ctx.trust, version: '1.0' });
    const pkgId = (JSON.parse(await sh('curl', ['-s', '-u', 'admin:bench-password', '-F', 'name=scale', '-F', `package=@${file}`, `${master.url}/api/packages`])) as { id: number }).id;
    const size = async () => Number((await pg.query<{ n: string }>(database, 'SELECT pg_database_size(current_database()) AS n'))[0]?.n ?? 0);
    const pid = master.child.pid as number;
    const cpuBefore = await cpuSeconds(pid);
    const sizeBefore = await size();
    const start = process.hrtime.bigint();
    const created = await fetch(`${master.url}/api/operations`, { method: 'POST', headers: { ...AUTH, 'content-type': 'application/json' }, body: JSON.stringify({ action: 'apply', package: pkgId, servers: 'all' }) });
    const { id } = (await created.json()) as { id: number };
    await pool(agents, 16, async (agent) => {
      const call = async (results: unknown[]) => {
        const body = JSON.stringify({ status: agent.status, results });
        const res = await fetch(`${master.url}/api/agent/report`, { method: 'POST', headers: agentHeaders(agent, body), body });
        if (res.status !== 200) throw new Error(`report answered ${res.status}`);
        return (await res.json()) as { commands: { id: string; package: { version: string } }[] };
      };
      for (const command of (await call([])).commands) {
        const startedAt = new Date().toISOString();
        await call([{ commandId: command.id, state: 'running', message: 'apply accepted', versionBefore: '0.9', versionAfter: null, startedAt, finishedAt: null }]);
        agent.status = { ...agent.status, version: command.package.version };
        await call([{ commandId: command.id, state: 'succeeded', message: 'installed', versionBefore: '0.9', versionAfter: command.package.version, startedAt, finishedAt: new Date().toISOString() }]);
      }
    });
    let state = 'running';
    while (state === 'running' && seconds(start) < 600) {
      state = ((await (await fetch(`${master.url}/api/operations/${id}`, { headers: AUTH })).json()) as { state: string }).state;
      if (state === 'running') await new Promise((r) => setTimeout(r, 200));
    }
    if (state !== 'succeeded') throw new Error(`the operation ended ${state}`);
    return { cpuMsPerTarget: (((await cpuSeconds(pid)) - cpuBefore) * 1000) / count, bytesPerTarget: ((await size()) - sizeBefore) / count, wall: seconds(start) };
  } finally {
    await master.stop();
  }
}

/**
 * Several masters: mailbox polls on one SQLite master, one PostgreSQL master and two PostgreSQL
 * masters sharing the load (each pinned to its own core when the machine has four or more: two
 * masters, PostgreSQL and the load generator), and an operation over many agents on PostgreSQL.
 */
export async function clusterScenario(ctx: BenchContext): Promise<Figure[]> {
  const unavailable = await postgresUnavailable();
  if (unavailable) throw new Error(unavailable);
  const agentCount = ctx.quick ? 500 : 2000;
  const duration = ctx.quick ? 5 : 10;
  const cores = os.cpus().length;
  const pg = await startPostgres();
  const started: BenchMaster[] = [];
  const start = async (name: string, extra: string[]) => {
    const m = await startBenchMaster(['--data', path.join(ctx.work, name), '--trust', ctx.trust, '--auto-accept', ...extra], ENV);
    started.push(m);
    return m;
  };
  try {
    const lite = await start('cluster-sqlite', []);
    const liteAgents = await enrollAgents(lite.url, TOKEN, agentCount);
    const liteFigures = await measurePolls([lite], liteAgents, duration);
    const liteP99 = await pacedP99(lite, liteAgents, duration);
    await lite.stop();
    started.splice(started.indexOf(lite), 1);

    const url = await pg.createDatabase('bench_polls');
    const one = await start('cluster-pg-1', ['--database', url]);
    const pgAgents = await enrollAgents(one.url, TOKEN, agentCount);
    if (cores >= 4) await pin(one.child.pid as number, 0);
    const oneFigures = await measurePolls([one], pgAgents, duration);
    const oneP99 = await pacedP99(one, pgAgents, duration);
    const two = await start('cluster-pg-2', ['--database', url]);
    if (cores >= 4) await pin(two.child.pid as number, 1);
    const twoFigures = await measurePolls([one, two], pgAgents, duration);

    const targets = ctx.quick ? 1000 : 10_000;
    const op = await operation(ctx, pg, targets);
    const judged = cores >= 4;
    return [
      { scenario: 'cluster', name: 'sqlite_polls_per_second', value: round(liteFigures.rate, 0), unit: 'polls/s' },
      { scenario: 'cluster', name: 'sqlite_cpu_ms_per_poll', value: round(liteFigures.cpuMsPerPoll, 3), unit: 'ms' },
      { scenario: 'cluster', name: 'sqlite_p99_at_500_per_second', value: liteP99, unit: 'ms' },
      { scenario: 'cluster', name: 'postgres_polls_per_second', value: round(oneFigures.rate, 0), unit: 'polls/s', reference: { what: 'one master on SQLite', value: round(liteFigures.rate, 0), unit: 'polls/s' } },
      { scenario: 'cluster', name: 'postgres_cpu_ms_per_poll', value: round(oneFigures.cpuMsPerPoll, 3), unit: 'ms', reference: { what: 'one master on SQLite', value: round(liteFigures.cpuMsPerPoll, 3), unit: 'ms' }, target: '≤ 1.5× SQLite', met: oneFigures.cpuMsPerPoll <= 1.5 * liteFigures.cpuMsPerPoll },
      { scenario: 'cluster', name: 'postgres_p99_at_500_per_second', value: oneP99, unit: 'ms', reference: { what: 'one master on SQLite', value: liteP99, unit: 'ms' } },
      {
        scenario: 'cluster', name: 'two_masters_polls_per_second', value: round(twoFigures.rate, 0), unit: 'polls/s', reference: { what: 'one master on PostgreSQL', value: round(oneFigures.rate, 0), unit: 'polls/s' },
        target: judged ? '≥ 1.6× one master' : `≥ 1.6× one master (not judged: needs 4 cores for two masters, PostgreSQL and the load; this machine has ${cores})`,
        ...(judged ? { met: twoFigures.rate >= 1.6 * oneFigures.rate } : {}),
      },
      { scenario: 'cluster', name: 'two_masters_cpu_ms_per_poll', value: round(twoFigures.cpuMsPerPoll, 3), unit: 'ms' },
      { scenario: 'cluster', name: `operation_${targets}_targets_cpu_ms_per_target`, value: round(op.cpuMsPerTarget, 2), unit: 'ms' },
      { scenario: 'cluster', name: `operation_${targets}_targets_database_bytes_per_target`, value: round(op.bytesPerTarget, 0), unit: 'B' },
      { scenario: 'cluster', name: `operation_${targets}_targets_wall`, value: round(op.wall, 1), unit: 's' },
    ];
  } finally {
    await Promise.all(started.map((m) => m.stop()));
    await pg.stop();
  }
}
