import type { AdminApi, OperationRow, TargetRow } from './api.js';
import { installedVersion, stagingSummary } from './agent-disk.js';
import { INITIAL_VERSION, type SoakAgent } from './fleet.js';
import { judgeRun } from './flatness.js';
import { tally } from './operations.js';
import type { ManagedProcess } from './processes.js';
import type { Sample } from './sampler.js';

export interface Check {
  name: string;
  pass: boolean;
  details: string[];
}

export async function operationsTerminal(api: AdminApi): Promise<Check> {
  const all = await api.operations();
  const open = all.filter((o) => o.state === 'running');
  const details = [`${all.length} operations, ${open.length} still running`];
  for (const o of open) {
    const report = await api.operation(o.id);
    details.push(`#${o.id} ${o.action} ${o.package.version}: ${tally(report.targets ?? [])}`);
    for (const t of (report.targets ?? []).filter((x) => !['succeeded', 'failed', 'timedout', 'cancelled'].includes(x.state))) details.push(`  ${t.server}: ${t.state} (${t.message})`);
  }
  return { name: 'every operation is terminal', pass: open.length === 0 && all.length > 0, details };
}

/** Apply operations with their targets, oldest first. */
export async function applyReports(api: AdminApi): Promise<OperationRow[]> {
  const applies = (await api.operations()).filter((o) => o.action === 'apply').sort((a, b) => a.id - b.id);
  const reports: OperationRow[] = [];
  for (const o of applies) reports.push(await api.operation(o.id));
  return reports;
}

/**
 * Each server against its last successful apply target (operations run one version after the
 * other, so the last by id is the newest): the version the agent's disk runs (DATA/current) and
 * the version the master lists must both be that target's version.
 */
export async function versionsMatch(api: AdminApi, agents: SoakAgent[]): Promise<Check> {
  const reports = await applyReports(api);
  const servers = await api.servers();
  const details: string[] = [];
  let pass = agents.length > 0;
  for (const agent of agents) {
    const targets = reports.flatMap((op) => (op.targets ?? []).filter((t) => t.serverId === agent.serverId).map((t) => ({ op, t })));
    const lastGood = targets.filter(({ t }) => t.state === 'succeeded').pop();
    const expected = lastGood?.op.package.version ?? INITIAL_VERSION;
    const onDisk = await installedVersion(agent.dataDir);
    const listed = servers.find((s) => s.id === agent.serverId)?.version ?? null;
    const ok = onDisk === expected && listed === expected;
    pass &&= ok;
    details.push(`${agent.name.padEnd(7)} last successful apply ${lastGood ? `#${lastGood.op.id}` : '(none)'} → ${expected}; runs ${onDisk}; master lists ${listed ?? 'nothing'}${ok ? '' : '  MISMATCH'}`);
    if (!ok) {
      const later = lastGood ? targets.filter(({ op }) => op.id > lastGood.op.id) : targets;
      for (const { op, t } of later.slice(-4)) details.push(`    later apply #${op.id} ${op.package.version}: ${describe(t)}`);
    }
  }
  return { name: 'every server runs the version of its last successful apply', pass, details };
}

function describe(t: TargetRow): string {
  return `${t.state} (${t.message.slice(0, 200)}); versions ${t.versionBefore ?? '?'} → ${t.versionAfter ?? '?'}`;
}

export function masterFlat(samples: Sample[]): Check {
  const lifetimes = [...new Set(samples.map((s) => s.lifetime))].sort((a, b) => a - b);
  const verdicts = lifetimes.map((l) => judgeRun(l, samples));
  const last = verdicts[verdicts.length - 1];
  const details = verdicts.map((v) => v.text);
  if (!last?.judged) details.push('the last run of the master must be long enough to judge');
  return { name: 'master RSS and file descriptors are flat', pass: Boolean(last?.judged) && verdicts.every((v) => v.ok), details };
}

export async function stagingEmpty(agents: SoakAgent[]): Promise<Check> {
  const details: string[] = [];
  for (const agent of agents) {
    const left = await stagingSummary(agent.dataDir);
    if (left) details.push(`${agent.name}: ${left}`);
  }
  return { name: 'no file left in any staging folder', pass: details.length === 0, details: details.length ? details : ['every staging folder is empty'] };
}

export function noUnexpectedExit(processes: ManagedProcess[]): Check {
  const details = processes.flatMap((p) => p.unexpectedExits);
  return { name: 'no process exited unless the soak killed it', pass: details.length === 0, details: details.length ? details : ['none did'] };
}
