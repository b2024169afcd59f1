import { readdir, readFile } from 'node:fs/promises';
import { judged } from './flatness.js';
import type { ManagedProcess } from './processes.js';

export interface Sample {
  /** Seconds since the soak started. */
  t: number;
  /** Which run of the master (1 = the first start; a restart after a kill is the next one). */
  lifetime: number;
  /** Seconds since that run was ready. */
  age: number;
  phase: 'faults' | 'settling';
  /** Taken once this run of the master served its first big package (its memory's working size). */
  loaded: boolean;
  rssMb: number;
  fds: number;
}

async function measure(pid: number): Promise<{ rssMb: number; fds: number } | null> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const rssKb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN);
    const fds = (await readdir(`/proc/${pid}/fd`)).length;
    return Number.isFinite(rssKb) ? { rssMb: Math.round((rssKb / 1024) * 10) / 10, fds } : null;
  } catch {
    // The process went away between two reads (killed by the soak): no sample this time.
    return null;
  }
}

/** Reads the master's resident memory (VmRSS) and open file descriptors (/proc/PID/fd) every few seconds. */
export class Sampler {
  readonly samples: Sample[] = [];
  phase: Sample['phase'] = 'faults';
  private timer: NodeJS.Timeout | null = null;
  private readonly started = Date.now();

  constructor(private readonly master: ManagedProcess, private readonly everyMs: number, private readonly lastBigEndedAt: () => number) {}

  start(): void {
    void this.take();
    this.timer = setInterval(() => void this.take(), this.everyMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private async take(): Promise<void> {
    const pid = this.master.pid;
    const readyAt = this.master.readyAt;
    // Not running, or not ready yet (a sample of a half-started master belongs to no run).
    if (pid === null || !this.master.running() || readyAt === 0) return;
    const lifetime = this.master.starts;
    const measured = await measure(pid);
    // A sample taken across a restart would belong to no run: dropped.
    if (!measured || this.master.starts !== lifetime || this.master.pid !== pid) return;
    const now = Date.now();
    const loaded = this.lastBigEndedAt() > readyAt;
    this.samples.push({ t: Math.round((now - this.started) / 1000), lifetime, age: Math.round((now - readyAt) / 1000), phase: this.phase, loaded, ...measured });
  }
}

export function sampleTable(samples: Sample[]): string {
  const rows = [['t (s)', 'master run', 'age (s)', 'phase', 'judged', 'RSS (MB)', 'fds'], ...samples.map((s) => [s.t, s.lifetime, s.age, s.phase, judged(s) ? 'yes' : 'no', s.rssMb.toFixed(1), s.fds].map(String))];
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((cell, i) => cell.padStart(widths[i] ?? 0)).join('  ')).join('\n');
}
