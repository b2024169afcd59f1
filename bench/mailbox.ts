import path from 'node:path';
import autocannon from 'autocannon';
import type { BenchContext } from './run.js';
import { pacedLoad } from './paced-load.js';
import { agentHeaders, enrollAgents } from './simulated-agents.js';
import { round, startBenchMaster, type Figure } from './support.js';

const TOKEN = 'bench-enroll-token-0123456789';

function run(options: autocannon.Options): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    autocannon(options, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

/** 3. Mailbox capacity: enrolled agents with nothing queued, their polls made by autocannon. */
export async function mailboxScenario(ctx: BenchContext): Promise<Figure[]> {
  const count = ctx.quick ? 1000 : 10_000;
  const duration = ctx.quick ? 5 : 10;
  const master = await startBenchMaster(['--data', path.join(ctx.work, 'mailbox-master'), '--trust', ctx.trust, '--auto-accept'], { PROPAGATOR_ADMIN_PASSWORD: 'bench-password', PROPAGATOR_ENROLL_TOKEN: TOKEN });
  try {
    const agents = await enrollAgents(master.url, TOKEN, count);
    // Bodies made beforehand: the load generator shares the machine, and should cost it little.
    // Only the agent's clock is added at each poll, as agents send it (the master measures the offset).
    const prepared = agents.map((a) => ({ agent: a, head: JSON.stringify({ status: a.status, results: [] }).slice(0, -1) }));
    let next = 0;
    // Each poll carries a fresh nonce, as agents send them (the master signs its answer over it).
    const nextPoll = () => {
      const p = prepared[next++ % prepared.length] as (typeof prepared)[number];
      const body = `${p.head},"agentTime":${Date.now()}}`;
      return { headers: agentHeaders(p.agent, body), body };
    };
    const poll: autocannon.Request = {
      method: 'POST',
      path: '/api/agent/report',
      setupRequest: (request: autocannon.Request) => ({ ...request, ...nextPoll() }),
    };
    // The same polls to the same route without the answer's signature: what signing costs.
    const unsignedPoll: autocannon.Request = { ...poll, path: '/bench/unsigned/api/agent/report' };
    const common = { url: master.url, connections: 32, duration, pipelining: 1 };
    // Steady state, as in a running domain: every agent has called once since the master started
    // (its credentials are cached) and both routes are compiled; neither warm-up is measured.
    await run({ url: master.url, connections: 32, amount: count, requests: [poll] });
    await run({ url: master.url, connections: 32, amount: 5000, requests: [{ method: 'GET', path: '/bench/noop' }] });
    await run({ url: master.url, connections: 32, amount: 5000, requests: [unsignedPoll] });
    // The host's speed drifts: the unsigned reference runs before and after, and counts as their mean.
    const unsignedBefore = await run({ ...common, requests: [unsignedPoll] });
    const polls = await run({ ...common, requests: [poll] });
    const unsignedAfter = await run({ ...common, requests: [unsignedPoll] });
    const noop = await run({ ...common, requests: [{ method: 'GET', path: '/bench/noop' }] });
    for (const [label, r] of [['polls', polls], ['noop', noop], ['unsigned polls', unsignedBefore], ['unsigned polls', unsignedAfter]] as const) {
      if (r.non2xx > 0 || r.errors > 0) throw new Error(`${label}: ${r.non2xx} non-2xx answers, ${r.errors} errors`);
    }
    // Latency at 500 polls/s, at a steady pace (see paced-load.ts for why not autocannon's rate).
    const paced = await pacedLoad({ url: master.url, rate: 500, seconds: duration, request: () => ({ method: 'POST', path: '/api/agent/report', ...nextPoll() }) });
    const pacedNoop = await pacedLoad({ url: master.url, rate: 500, seconds: duration, request: () => ({ method: 'GET', path: '/bench/noop' }) });
    for (const [label, r] of [['paced polls', paced], ['paced noop', pacedNoop]] as const) {
      if (r.failed > 0) throw new Error(`${label}: ${r.failed} failed requests`);
    }
    const rate = polls.requests.average;
    const reference = noop.requests.average;
    const unsigned = (unsignedBefore.requests.average + unsignedAfter.requests.average) / 2;
    return [
      { scenario: 'mailbox', name: 'signed_polls_per_second', value: round(rate, 0), unit: 'polls/s', reference: { what: `the same polls with unsigned answers, mean of before (${round(unsignedBefore.requests.average, 0)}) and after (${round(unsignedAfter.requests.average, 0)})`, value: round(unsigned, 0), unit: 'polls/s' }, target: '≥ 0.9× unsigned', met: rate >= 0.9 * unsigned },
      { scenario: 'mailbox', name: 'ratio_signed_to_unsigned', value: round(rate / unsigned), unit: '×', target: '≥ 0.9', met: rate >= 0.9 * unsigned },
      { scenario: 'mailbox', name: `polls_per_second_${count}_agents`, value: round(rate, 0), unit: 'polls/s', reference: { what: 'trivial express route in the master process', value: round(reference, 0), unit: 'req/s' }, target: '≥ 50% of reference', met: rate >= 0.5 * reference },
      { scenario: 'mailbox', name: 'ratio_to_reference', value: round(rate / reference), unit: '×', target: '≥ 0.5', met: rate >= 0.5 * reference },
      { scenario: 'mailbox', name: 'p99_latency_at_max', value: polls.latency.p99, unit: 'ms' },
      { scenario: 'mailbox', name: 'p99_latency_at_500_per_second', value: paced.p99, unit: 'ms', reference: { what: 'the trivial route at 500/s', value: pacedNoop.p99, unit: 'ms' }, target: '< 50 ms', met: paced.p99 < 50 },
      { scenario: 'mailbox', name: 'p50_latency_at_500_per_second', value: paced.p50, unit: 'ms' },
      { scenario: 'mailbox', name: 'paced_rate', value: round(paced.rate, 0), unit: 'polls/s' },
    ];
  } finally {
    await master.stop();
  }
}
