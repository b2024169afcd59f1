import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startAgentProcess } from '../test/helpers/agent-process.js';
import { startMasterProcess } from '../test/helpers/master-process.js';
import type { BenchContext } from './run.js';
import { cpuSeconds, peakRssMb, pool, round, seconds, type Figure } from './support.js';

const TOKEN = 'bench-idle-enroll-token-0123456789';
/** Each figure's calls: a mailbox agent calling every 0.2 s (±20 %). */
const POLL_SECONDS = 0.2;

/** Command records as an agent keeps them for a week after the master has the result (DATA/commands). */
async function writeRecords(dir: string, count: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  const hour = new Date(Date.now() - 3600_000).toISOString();
  const hex = () => randomBytes(32).toString('hex');
  await pool(Array.from({ length: count }, (_, i) => i), 32, async (i) => {
    const id = randomUUID();
    const record = {
      command: { id, type: 'apply', package: { sha256: hex(), payloadSha256: hex(), manifestSha256: hex(), size: 1_000_000 + i, product: 'watchdoc', version: '6.2.0', name: `bench ${i}` }, allowDowngrade: false },
      result: { commandId: id, state: 'succeeded', message: 'installed watchdoc 6.2.0', versionBefore: '6.1.0', versionAfter: '6.2.0', startedAt: hour, finishedAt: hour },
      reported: true,
    };
    await writeFile(path.join(dir, `${id}.json`), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  });
}

const reportCalls = (logs: string) => logs.split('\n').filter((l) => l.includes('"path":"/api/agent/report","status":200')).length;

/**
 * 6. What an idle mailbox agent costs per call to the master, with 10 and with 100,000 command
 * records kept (a week of results the master already has): the CPU time the agent process used
 * over a window (BENCH_IDLE_WINDOW_SECONDS, 30), divided by the calls the master logged from it.
 * And its start, which reads them.
 */
export async function agentIdleScenario(ctx: BenchContext): Promise<Figure[]> {
  const sizes = [10, ctx.quick ? 20_000 : 100_000];
  const windowMs = Number(process.env.BENCH_IDLE_WINDOW_SECONDS ?? (ctx.quick ? 10 : 30)) * 1000;
  const master = await startMasterProcess(['--data', path.join(ctx.work, 'idle-master'), '--trust', ctx.trust, '--log-level', 'debug', '--auto-accept'],
    { PROPAGATOR_ADMIN_PASSWORD: 'bench-password', PROPAGATOR_ENROLL_TOKEN: TOKEN });
  const figures: Figure[] = [];
  const perCall: number[] = [];
  try {
    for (const count of sizes) {
      const data = path.join(ctx.work, `idle-agent-${count}`);
      await writeRecords(path.join(data, 'commands'), count);
      const start = process.hrtime.bigint();
      const agent = await startAgentProcess(['--master', master.url, '--name', `idle-${count}`, '--mode', 'mailbox', '--data', data, '--trust', ctx.trust,
        '--initial-version', '6.1.0', '--poll-min', String(POLL_SECONDS), '--poll-max', String(POLL_SECONDS), '--log-level', 'warn'], { PROPAGATOR_ENROLL_TOKEN: TOKEN });
      const started = seconds(start);
      try {
        const pid = agent.child.pid as number;
        await new Promise((r) => setTimeout(r, 2_000));
        const calls0 = reportCalls(master.stdout());
        const cpu0 = await cpuSeconds(pid);
        const wall0 = process.hrtime.bigint();
        await new Promise((r) => setTimeout(r, windowMs));
        const cpu = (await cpuSeconds(pid)) - cpu0;
        const wall = seconds(wall0);
        const calls = reportCalls(master.stdout()) - calls0;
        // No call within the window: a call takes more than all of it (a lower bound, then).
        const ms = (cpu * 1000) / Math.max(calls, 1);
        perCall.push(ms);
        figures.push(
          { scenario: 'agent-idle', name: `cpu_ms_per_call_${count}_records`, value: round(ms, 2), unit: 'ms' },
          { scenario: 'agent-idle', name: `calls_per_second_${count}_records`, value: round(calls / wall, 2), unit: '/s', target: `about ${1 / POLL_SECONDS} (its rhythm)`, met: calls / wall >= 0.8 / POLL_SECONDS },
          { scenario: 'agent-idle', name: `cpu_percent_of_a_core_${count}_records`, value: round((cpu / wall) * 100, 1), unit: '%' },
          { scenario: 'agent-idle', name: `start_seconds_${count}_records`, value: round(started, 2), unit: 's' },
          { scenario: 'agent-idle', name: `peak_rss_${count}_records`, value: await peakRssMb(pid), unit: 'MB' },
        );
      } finally {
        await agent.stop();
        await rm(data, { recursive: true, force: true });
      }
    }
    const [few, many] = perCall as [number, number];
    figures.push({ scenario: 'agent-idle', name: 'per_call_ratio_many_to_few', value: round(many / few, 2), unit: '×', reference: { what: `${sizes[0]} records`, value: round(few, 2), unit: 'ms' }, target: '≤ 1.5', met: many / few <= 1.5 });
    return figures;
  } finally {
    await master.stop();
  }
}
