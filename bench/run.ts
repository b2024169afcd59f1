// npm run bench [-- upload fanout mailbox scale flood agent-idle cluster] [-- --quick]
// Runs each scenario against real masters and agents on loopback, beside its reference, prints one
// line per figure and writes bench/results/latest.json. Every scenario cleans up after itself.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { writeDevCertificates } from '../lib/dev-certs.js';
import { ROOT } from '../test/helpers/run.js';
import { agentIdleScenario } from './agent-idle.js';
import { clusterScenario } from './cluster.js';
import { fanoutScenario } from './fanout.js';
import { floodScenario } from './flood.js';
import { mailboxScenario } from './mailbox.js';
import { scaleScenario } from './scale.js';
import { line, type Figure } from './support.js';
import { uploadScenario } from './upload.js';

export interface BenchContext {
  work: string;
  quick: boolean;
  trust: string;
  publisher: { key: string; chain: string };
}

const SCENARIOS: Record<string, (ctx: BenchContext) => Promise<Figure[]>> = {
  upload: uploadScenario,
  fanout: fanoutScenario,
  mailbox: mailboxScenario,
  scale: scaleScenario,
  flood: floodScenario,
  'agent-idle': agentIdleScenario,
  cluster: clusterScenario,
};

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const chosen = args.filter((a) => !a.startsWith('--'));
const names = chosen.length > 0 ? chosen : Object.keys(SCENARIOS);
const unknown = names.filter((n) => !(n in SCENARIOS));
if (unknown.length > 0) {
  process.stderr.write(`unknown scenario ${unknown.join(', ')}; choose from ${Object.keys(SCENARIOS).join(', ')}\n`);
  process.exit(2);
}

const work = await mkdtemp(path.join(os.tmpdir(), 'propagator-bench-'));
const figures: Figure[] = [];
const failures: string[] = [];
try {
  const certs = await writeDevCertificates(path.join(work, 'certs'));
  const ctx: BenchContext = { work, quick, trust: path.dirname(certs.rootCert), publisher: { key: certs.publisherKey, chain: certs.publisherChain } };
  process.stdout.write(`Propagator benchmarks${quick ? ' (quick)' : ''} on ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 1024 ** 3)} GiB, Node ${process.version}\n`);
  for (const name of names) {
    const scenario = SCENARIOS[name] as (ctx: BenchContext) => Promise<Figure[]>;
    const started = Date.now();
    try {
      const result = await scenario(ctx);
      figures.push(...result);
      for (const f of result) process.stdout.write(`${line(f)}\n`);
      process.stdout.write(`  (${name} took ${Math.round((Date.now() - started) / 1000)} s)\n`);
    } catch (err) {
      failures.push(`${name}: ${err instanceof Error ? err.message : String(err)}`);
      process.stdout.write(`${name} FAILED: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
const results = path.join(ROOT, 'bench', 'results');
await mkdir(results, { recursive: true });
const report = { date: new Date().toISOString(), quick, machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? null, memoryGiB: Math.round(os.totalmem() / 1024 ** 3), node: process.version }, figures, failures };
await writeFile(path.join(results, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
process.stdout.write(`results: ${path.join(results, 'latest.json')}\n`);
const missed = figures.filter((f) => f.met === false);
if (missed.length > 0) process.stdout.write(`targets missed: ${missed.map((f) => `${f.scenario}.${f.name}`).join(', ')}\n`);
process.exitCode = failures.length > 0 ? 1 : 0;
