import type { Sample } from './sampler.js';

/** Samples of a master run taken before this age are its warm-up (caches, JIT, first sessions): not judged. */
export const WARMUP_S = 30;

/**
 * After the warm-up: 30 s old, and the run has served a big package (Node keeps the memory it
 * grew to for one; an idle start would make that look like growth).
 */
export function judged(s: Sample): boolean {
  return s.age >= WARMUP_S && s.loaded;
}
/** Fewer samples after the warm-up than this, and a run is too short to judge. */
export const MIN_SAMPLES = 9;

/** How much the last third's median may exceed the first third's: the larger of an absolute and a relative margin. */
export const TOLERANCE = { rssMb: 16, rssShare: 0.2, fds: 10, fdsShare: 0.25 };

export interface RunVerdict {
  lifetime: number;
  samples: number;
  judged: boolean;
  ok: boolean;
  text: string;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

function within(first: number, last: number, absolute: number, share: number): boolean {
  return last <= first + Math.max(absolute, first * share);
}

/**
 * "Flat", judged within each run of the master (a restart starts from a fresh heap, so runs are
 * never compared with each other): after the warm-up, the median of the last third of the samples
 * is within the tolerance of the median of the first third, for RSS and for file descriptors.
 */
export function judgeRun(lifetime: number, samples: Sample[]): RunVerdict {
  const settled = samples.filter((s) => s.lifetime === lifetime && judged(s));
  if (settled.length < MIN_SAMPLES) {
    return { lifetime, samples: settled.length, judged: false, ok: true, text: `master run ${lifetime}: ${settled.length} samples after the warm-up, too few to judge` };
  }
  const third = Math.floor(settled.length / 3);
  const first = settled.slice(0, third);
  const last = settled.slice(-third);
  const rss = [median(first.map((s) => s.rssMb)), median(last.map((s) => s.rssMb))] as const;
  const fds = [median(first.map((s) => s.fds)), median(last.map((s) => s.fds))] as const;
  const rssOk = within(rss[0], rss[1], TOLERANCE.rssMb, TOLERANCE.rssShare);
  const fdsOk = within(fds[0], fds[1], TOLERANCE.fds, TOLERANCE.fdsShare);
  return {
    lifetime, samples: settled.length, judged: true, ok: rssOk && fdsOk,
    text: `master run ${lifetime} (${settled.length} samples, ${first[0]?.age ?? 0}–${settled[settled.length - 1]?.age ?? 0} s of its life): `
      + `RSS median ${rss[0].toFixed(1)} → ${rss[1].toFixed(1)} MB ${rssOk ? 'flat' : 'GROWS'}, fds median ${fds[0]} → ${fds[1]} ${fdsOk ? 'flat' : 'GROW'}`,
  };
}
