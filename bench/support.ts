import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const CLOCK_TICKS = 100; // getconf CLK_TCK on Linux

export interface Figure {
  scenario: string;
  name: string;
  value: number;
  unit: string;
  reference?: { what: string; value: number; unit: string };
  target?: string;
  met?: boolean;
}

export function line(f: Figure): string {
  const ref = f.reference ? ` | reference (${f.reference.what}): ${f.reference.value} ${f.reference.unit}` : '';
  const target = f.target ? ` | target ${f.target}: ${f.met === undefined ? 'not judged' : f.met ? 'met' : 'MISSED'}` : '';
  return `${f.scenario}.${f.name} = ${f.value} ${f.unit}${ref}${target}`;
}

/** Peak resident memory of a process (VmHWM), in MB. */
export async function peakRssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Math.round(Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024);
}

/** User + system CPU time a process has used, in seconds. */
export async function cpuSeconds(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

export async function fileSize(file: string): Promise<number> {
  return (await stat(file).catch(() => null))?.size ?? 0;
}

export function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;

/** Runs a command; resolves with its output, rejects on failure. */
export function sh(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${command} ${args.join(' ')} exited ${code}: ${err}`))));
  });
}

export interface BenchMaster {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** The benchmark master (bench-master.ts) as a child process. */
export function startBenchMaster(args: string[], env: NodeJS.ProcessEnv): Promise<BenchMaster> {
  // BENCH_PROFILE=1: the master writes a V8 CPU profile (bench/results/profiles) when it stops.
  const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${path.join(BENCH_DIR, '..', '..', 'bench', 'results', 'profiles')}`] : [];
  const child = spawn(process.execPath, [...profile, path.join(BENCH_DIR, 'bench-master.js'), '--port', '0', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    child.stdout?.on('data', (c: Buffer) => {
      const url = /LISTENING (\S+)/.exec(c.toString())?.[1];
      if (url) resolve({ url, child, stop: async () => { child.kill('SIGTERM'); await exited; } });
    });
    child.on('exit', (code) => reject(new Error(`bench master exited ${code}: ${err}`)));
  });
}

/** Runs tasks with at most `limit` at once. */
export async function pool<T>(items: T[], limit: number, task: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      await task(items[i] as T, i);
    }
  }));
}
