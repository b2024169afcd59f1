// npm run soak [-- --minutes N] [--seed N] [--sample-seconds S] [--deadline S] [--bidirectional N] [--mailbox N] [--keep]
// A master and ten agents (5 bidirectional, 5 mailbox) as real processes on loopback, operations
// in a loop, faults at random; then, once everything had time to settle, the checks. Exit 1 on any
// FAIL. Not part of `npm test`: it runs for half an hour by default.
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AWAY_GRACE_MS } from '../server/operations-engine.js';
import { createTestPki } from '../test/helpers/test-pki.js';
import { masterFlat, noUnexpectedExit, operationsTerminal, stagingEmpty, versionsMatch, type Check } from './checks.js';
import { outcomesAgree } from './agreement.js';
import { FaultInjector } from './faults.js';
import { restart, startFleet, stopFleet, type Fleet } from './fleet.js';
import { OperationsLoop } from './operations.js';
import { parseSoakOptions, USAGE, type SoakOptions } from './options.js';
import { Random } from './random.js';
import { checkLines, outcomeSummary } from './report.js';
import { Sampler, sampleTable } from './sampler.js';
import { settle } from './settle.js';

let options: SoakOptions;
try {
  options = parseSoakOptions(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
  process.exit(2);
}

const began = Date.now();
const say = (line: string) => {
  const s = Math.round((Date.now() - began) / 1000);
  process.stdout.write(`[${String(Math.floor(s / 60)).padStart(3)}:${String(s % 60).padStart(2, '0')}] ${line}\n`);
};

const work = await mkdtemp(path.join(os.tmpdir(), 'propagator-soak-'));
let fleet: Fleet | null = null;
let finishing = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    finishing = true;
    process.stdout.write(`\n${signal}: stopping every process (logs and data folders kept in ${work})\n`);
    void (fleet ? stopFleet(fleet) : Promise.resolve()).finally(() => process.exit(130));
  });
}

/** Everything up to the checks; the fleet is stopped whatever happens. */
async function soak(): Promise<{ fleet: Fleet; checks: Check[]; injector: FaultInjector; loop: OperationsLoop; sampler: Sampler }> {
  say(`Propagator soak: ${options.minutes} min of faults, seed ${options.seed} (again: --seed ${options.seed}), ${options.agents.bidirectional} bidirectional + ${options.agents.mailbox} mailbox agents, deadline ${options.deadlineSeconds} s, work folder ${work}`);
  const pki = await createTestPki(path.join(work, 'pki'));
  const running = await startFleet(work, options, pki.root);
  fleet = running;
  const { api } = running;
  say(`master at ${api.url} (deadlines ${running.deadlines.bidirectionalS} s / ${running.deadlines.mailboxS} s), agents through ${running.proxy.url}`);
  for (const proc of [running.master, ...running.agents.map((a) => a.process)]) {
    proc.onUnexpectedExit = () => {
      say(`UNEXPECTED: ${proc.spec.name} exited by itself; starting it again`);
      if (!finishing) setTimeout(() => void restart(proc).catch((err: unknown) => say(`could not restart ${proc.spec.name}: ${(err as Error).message}`)), 1000);
    };
  }

  let loop: OperationsLoop | null = null;
  const sampler = new Sampler(running.master, options.sampleSeconds * 1000, () => loop?.lastBigEndedAt ?? 0);
  sampler.start();
  const faultsEnd = Date.now() + options.minutes * 60_000;
  const injector = new FaultInjector(running, new Random(options.seed), { endAt: faultsEnd, masterKillsUntil: Date.now() + options.minutes * 30_000, longOutages: options.minutes >= 3 }, say);
  const packages = path.join(work, 'packages');
  await mkdir(packages);
  loop = new OperationsLoop(api, packages, pki.good.ecP256, new Random(options.seed ^ 0x5eed), 3 * options.deadlineSeconds * 1000 + AWAY_GRACE_MS, say);
  let loopError: Error | null = null;
  const looping = loop.run(() => Date.now() < faultsEnd).catch((err: unknown) => {
    loopError = err as Error;
    say(`the operations loop stopped: ${loopError.message}`);
  });

  await injector.run();
  say(`faults stop (${Object.entries(injector.counts).map(([k, n]) => `${k} ${n}`).join(', ')})`);
  await injector.heal();
  say('every process runs again; the operations loop finishes its round');
  await looping;
  sampler.phase = 'settling';
  say('settling');
  await settle(running, loop, say);

  const checks: Check[] = [
    await operationsTerminal(api),
    await versionsMatch(api, running.agents),
    masterFlat(sampler.samples),
    await stagingEmpty(running.agents),
    noUnexpectedExit([running.master, ...running.agents.map((a) => a.process)]),
    { name: 'the operations loop ran to the end', pass: loopError === null, details: [loopError ? (loopError as Error).message : `${loop.round} rounds`, ...loop.problems] },
  ];
  sampler.stop();
  finishing = true;
  // The master's own records, read from its database once it has stopped.
  await stopFleet(running);
  checks.push(await outcomesAgree(running.masterDataDir, running.agents));
  return { fleet: running, checks, injector, loop, sampler };
}

let result: Awaited<ReturnType<typeof soak>>;
try {
  result = await soak();
} catch (err) {
  finishing = true;
  process.stdout.write(`the soak could not run: ${(err as Error).stack ?? String(err)}\nlogs kept in ${work}\n`);
  if (fleet) await stopFleet(fleet);
  process.exit(1);
}
const { checks, injector, loop, sampler } = result;

const out = [
  '',
  `Faults: ${Object.entries(injector.counts).map(([k, n]) => `${k} ${n}`).join(', ')}; master started ${result.fleet.master.starts} times; ${result.fleet.proxy.connections()} agent connections through the proxy.`,
  ...outcomeSummary(loop.finished),
  '',
  `Master samples every ${options.sampleSeconds} s (flatness judged within each master run, on the samples taken once it was 30 s old and had served a big package):`,
  sampleTable(sampler.samples),
  '',
  ...checkLines(checks),
];
process.stdout.write(`${out.join('\n')}\n`);
const failed = checks.filter((c) => !c.pass).length;
if (failed === 0 && !options.keep) await rm(work, { recursive: true, force: true });
else {
  // The big packages' random padding is no evidence of anything: only the rest is kept.
  for (const file of (await readdir(path.join(work, 'agents'), { recursive: true })).filter((f) => f.endsWith('padding.bin'))) await rm(path.join(work, 'agents', file), { force: true });
  process.stdout.write(`logs and data folders kept in ${work}\n`);
}
process.stdout.write(`${failed === 0 ? 'SOAK PASSED' : `SOAK FAILED (${failed} of ${checks.length} checks)`}\n`);
process.exitCode = failed === 0 ? 0 : 1;
