import path from 'node:path';
import { makePackage } from '../test/helpers/openssl-package.js';
import type { BenchContext } from './run.js';
import { agentHeaders, enrollAgents, type SimulatedAgent } from './simulated-agents.js';
import { cpuSeconds, fileSize, pool, round, seconds, sh, startBenchMaster, type Figure } from './support.js';

const TOKEN = 'bench-enroll-token-0123456789';

interface Answer {
  commands: { id: string; package: { version: string } }[];
}

/** What a real mailbox agent says while it installs: running, then succeeded. */
async function simulateInstall(url: string, agent: SimulatedAgent): Promise<void> {
  const call = async (results: unknown[]): Promise<Answer> => {
    const body = JSON.stringify({ status: agent.status, results });
    const res = await fetch(`${url}/api/agent/report`, { method: 'POST', headers: agentHeaders(agent, body), body });
    if (res.status !== 200) throw new Error(`report answered ${res.status}`);
    return (await res.json()) as Answer;
  };
  const answer = await call([]);
  for (const command of answer.commands) {
    const startedAt = new Date().toISOString();
    await call([{ commandId: command.id, state: 'running', message: 'apply accepted', versionBefore: '0.9', versionAfter: null, startedAt, finishedAt: null }]);
    agent.status = { ...agent.status, version: command.package.version };
    await call([{ commandId: command.id, state: 'succeeded', message: `installed watchdoc ${command.package.version}`, versionBefore: '0.9', versionAfter: command.package.version, startedAt, finishedAt: new Date().toISOString() }]);
  }
}

/** 4. An apply to 1,000 simulated mailbox agents: master CPU, database growth, report page time. */
export async function scaleScenario(ctx: BenchContext): Promise<Figure[]> {
  const count = ctx.quick ? 200 : 1000;
  const data = path.join(ctx.work, 'scale-master');
  const master = await startBenchMaster(['--data', data, '--trust', ctx.trust, '--product-version', '1.0', '--auto-accept'], { PROPAGATOR_ADMIN_PASSWORD: 'bench-password', PROPAGATOR_ENROLL_TOKEN: TOKEN });
  const auth = { authorization: `Basic ${Buffer.from('admin:bench-password').toString('base64')}` };
  try {
    const agents = await enrollAgents(master.url, TOKEN, count);
    const file = await makePackage(ctx.work, 'scale', { publisher: ctx.publisher, payloadDir: ctx.trust, version: '1.0' });
    const uploaded = await sh('curl', ['-s', '-u', 'admin:bench-password', '-F', 'name=scale', '-F', `package=@${file}`, `${master.url}/api/packages`]);
    const pkgId = (JSON.parse(uploaded) as { id: number }).id;
    const dbFiles = ['propagator.sqlite', 'propagator.sqlite-wal'].map((f) => path.join(data, f));
    const size = async () => (await Promise.all(dbFiles.map(fileSize))).reduce((a, b) => a + b, 0);
    const pid = master.child.pid as number;
    const cpuBefore = await cpuSeconds(pid);
    const sizeBefore = await size();
    const start = process.hrtime.bigint();
    const created = await fetch(`${master.url}/api/operations`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ action: 'apply', package: pkgId, servers: 'all' }) });
    const { id } = (await created.json()) as { id: number };
    await pool(agents, 16, (agent) => simulateInstall(master.url, agent));
    let state = 'running';
    while (state === 'running' && seconds(start) < 300) {
      state = ((await (await fetch(`${master.url}/api/operations/${id}`, { headers: auth })).json()) as { state: string }).state;
      if (state === 'running') await new Promise((r) => setTimeout(r, 100));
    }
    if (state !== 'succeeded') throw new Error(`the operation ended ${state}`);
    const wall = seconds(start);
    const cpu = (await cpuSeconds(pid)) - cpuBefore;
    const growth = (await size()) - sizeBefore;
    const timings: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = process.hrtime.bigint();
      const page = await fetch(`${master.url}/operations/${id}`, { headers: { ...auth, accept: 'text/html' } });
      await page.text();
      if (page.status !== 200) throw new Error(`the report page answered ${page.status}`);
      timings.push(seconds(t) * 1000);
    }
    const t = process.hrtime.bigint();
    await (await fetch(`${master.url}/api/operations/${id}`, { headers: auth })).json();
    const apiMs = seconds(t) * 1000;
    const worstPage = Math.max(...timings);
    return [
      { scenario: 'scale', name: `operation_seconds_${count}_targets`, value: round(wall), unit: 's' },
      { scenario: 'scale', name: 'master_cpu_seconds', value: round(cpu), unit: 's' },
      { scenario: 'scale', name: 'master_cpu_per_target', value: round((cpu * 1000) / count), unit: 'ms' },
      { scenario: 'scale', name: 'database_bytes_per_target', value: Math.round(growth / count), unit: 'bytes' },
      { scenario: 'scale', name: 'report_page_worst_of_5', value: round(worstPage, 1), unit: 'ms', target: '< 1000 ms', met: worstPage < 1000 },
      { scenario: 'scale', name: 'report_json_all_targets', value: round(apiMs, 1), unit: 'ms' },
    ];
  } finally {
    await master.stop();
  }
}
