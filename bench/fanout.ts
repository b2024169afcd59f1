import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startAgentProcess, type AgentProcess } from '../test/helpers/agent-process.js';
import { makePackage } from '../test/helpers/openssl-package.js';
import { makeRandomPayload } from '../test/helpers/random-payload.js';
import { startMasterProcess } from '../test/helpers/master-process.js';
import { freePort } from '../test/helpers/run.js';
import type { BenchContext } from './run.js';
import { cpuSeconds, pool, round, seconds, sh, type Figure } from './support.js';

const AGENTS = 20;

/** nginx (Debian's) serving the file to 20 parallel curl downloads, each followed by sha256sum. */
async function nginxReference(ctx: BenchContext, file: string): Promise<number> {
  const prefix = path.join(ctx.work, 'nginx');
  const downloads = path.join(ctx.work, 'nginx-downloads');
  await mkdir(path.join(prefix, 'logs'), { recursive: true });
  await mkdir(downloads, { recursive: true });
  // nginx workers run as an unprivileged user: they must be able to reach and read the file.
  await chmod(ctx.work, 0o755);
  await chmod(path.dirname(file), 0o755);
  await chmod(file, 0o644);
  const port = await freePort();
  const conf = path.join(prefix, 'nginx.conf');
  await writeFile(conf, `worker_processes 2;\npid ${prefix}/nginx.pid;\nerror_log ${prefix}/logs/error.log;\nevents { worker_connections 256; }\n` +
    `http { access_log off; sendfile on; client_body_temp_path ${prefix}/tmp; proxy_temp_path ${prefix}/tmp; fastcgi_temp_path ${prefix}/tmp; uwsgi_temp_path ${prefix}/tmp; scgi_temp_path ${prefix}/tmp;\n` +
    `  server { listen 127.0.0.1:${port}; root ${path.dirname(file)}; } }\n`);
  await sh('nginx', ['-c', conf, '-p', prefix]);
  try {
    const start = process.hrtime.bigint();
    await pool(Array.from({ length: AGENTS }, (_, i) => i), AGENTS, async (i) => {
      const out = path.join(downloads, `${i}.pkg`);
      await sh('sh', ['-c', `curl -s -f -o ${out} http://127.0.0.1:${port}/${path.basename(file)} && sha256sum ${out}`]);
    });
    return seconds(start);
  } finally {
    await sh('nginx', ['-c', conf, '-p', prefix, '-s', 'stop']).catch(() => undefined);
    await rm(downloads, { recursive: true, force: true });
  }
}

/** 2. One package propagated to 20 mailbox agents: time from the operation's start to all staged. */
export async function fanoutScenario(ctx: BenchContext): Promise<Figure[]> {
  const size = ctx.quick ? 64 * 1024 ** 2 : 256 * 1024 ** 2;
  const payload = path.join(ctx.work, 'fanout-payload.tar.gz');
  await makeRandomPayload(payload, size);
  const serveDir = path.join(ctx.work, 'fanout-serve');
  await mkdir(serveDir, { recursive: true });
  const file = await makePackage(serveDir, 'fanout', { publisher: ctx.publisher, payloadFile: payload, version: '1.0' });
  await rm(payload);
  // This host's speed drifts by tens of percent within minutes (shared cores): the reference runs
  // before and after the fan-out, and the fan-out is compared with their mean.
  const referenceBefore = await nginxReference(ctx, file);

  const password = 'bench-password';
  const auth = { authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` };
  const master = await startMasterProcess(['--data', path.join(ctx.work, 'fanout-master'), '--trust', ctx.trust, '--log-level', 'warn', '--product-version', '1.0', '--auto-accept'],
    { PROPAGATOR_ADMIN_PASSWORD: password, PROPAGATOR_ENROLL_TOKEN: 'bench-enroll-token-0123456789' });
  const agents: AgentProcess[] = [];
  try {
    await pool(Array.from({ length: AGENTS }, (_, i) => i), 5, async (i) => {
      agents.push(await startAgentProcess(['--master', master.url, '--name', `fan-${i}`, '--mode', 'mailbox', '--data', path.join(ctx.work, 'fanout-agents', String(i)),
        '--trust', ctx.trust, '--initial-version', '0.9', '--poll-min', '0.5', '--poll-max', '1', '--log-level', 'warn'], { PROPAGATOR_ENROLL_TOKEN: 'bench-enroll-token-0123456789' }));
    });
    const uploaded = await sh('curl', ['-s', '-u', `admin:${password}`, '-F', 'name=fanout', '-F', `package=@${file}`, `${master.url}/api/packages`]);
    const pkgId = (JSON.parse(uploaded) as { id: number }).id;
    const cpuBefore = await Promise.all([master.child.pid, ...agents.map((a) => a.child.pid)].map((pid) => cpuSeconds(pid ?? 0)));
    const start = process.hrtime.bigint();
    const created = await fetch(`${master.url}/api/operations`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ action: 'propagate', package: pkgId, servers: 'all' }) });
    const { id } = (await created.json()) as { id: number };
    let state = 'running';
    let counts: Record<string, number> = {};
    while (state === 'running' && seconds(start) < 600) {
      await new Promise((r) => setTimeout(r, 100));
      const op = (await (await fetch(`${master.url}/api/operations/${id}`, { headers: auth })).json()) as { state: string; counts: Record<string, number> };
      state = op.state;
      counts = op.counts;
    }
    const wall = seconds(start);
    if (state !== 'succeeded') throw new Error(`the fan-out ended ${state}: ${JSON.stringify(counts)}`);
    const cpuAfter = await Promise.all([master.child.pid, ...agents.map((a) => a.child.pid)].map((pid) => cpuSeconds(pid ?? 0)));
    const used = cpuAfter.map((c, i) => c - (cpuBefore[i] ?? 0));
    const referenceAfter = await nginxReference(ctx, file);
    const reference = (referenceBefore + referenceAfter) / 2;
    const what = `nginx + ${AGENTS} parallel curl + sha256sum, mean of ${round(referenceBefore, 1)} s before and ${round(referenceAfter, 1)} s after`;
    return [
      { scenario: 'fanout', name: `all_staged_seconds_${AGENTS}x${Math.round(size / 1024 ** 2)}MiB`, value: round(wall), unit: 's', reference: { what, value: round(reference), unit: 's' }, target: '≤ 1.5× reference', met: wall <= 1.5 * reference },
      { scenario: 'fanout', name: 'ratio_to_reference', value: round(wall / reference), unit: '×', target: '≤ 1.5', met: wall <= 1.5 * reference },
      { scenario: 'fanout', name: 'master_cpu_seconds', value: round(used[0] ?? 0, 1), unit: 's' },
      { scenario: 'fanout', name: 'agent_cpu_seconds_each', value: round(used.slice(1).reduce((a, b) => a + b, 0) / AGENTS, 2), unit: 's' },
    ];
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
    await master.stop();
    await rm(path.join(ctx.work, 'fanout-agents'), { recursive: true, force: true });
    await rm(serveDir, { recursive: true, force: true });
  }
}
