import { parseArgs } from 'node:util';

export interface SoakOptions {
  /** How long faults are injected and operations run; the settling comes on top. */
  minutes: number;
  /** Seeds every random choice (fault kinds, victims, delays, package kinds), printed for a rerun. */
  seed: number;
  /** Seconds between two samples of the master's RSS and file descriptors. */
  sampleSeconds: number;
  /** The master's --deadline-bidirectional; mailbox targets get 1.5 times as long. */
  deadlineSeconds: number;
  agents: { bidirectional: number; mailbox: number };
  /** Keep the work folder (logs, data folders) even when every check passes. */
  keep: boolean;
}

export const USAGE = `npm run soak [-- --minutes N] [--seed N] [--sample-seconds S] [--deadline S] [--bidirectional N] [--mailbox N] [--keep]
    A master and agents as real processes, operations in a loop, faults at random for N minutes
    (default 30), then the checks. Exit 1 on any FAIL, 2 on a usage mistake.`;

function number(text: string | undefined, fallback: number, flag: string, min: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value < min) throw new Error(`--${flag} must be a number of at least ${min} (got "${text}")`);
  return value;
}

export function parseSoakOptions(args: string[]): SoakOptions {
  const { values } = parseArgs({
    args,
    options: {
      minutes: { type: 'string' }, seed: { type: 'string' }, 'sample-seconds': { type: 'string' }, deadline: { type: 'string' },
      bidirectional: { type: 'string' }, mailbox: { type: 'string' }, keep: { type: 'boolean' },
    },
    strict: true,
  });
  const minutes = number(values.minutes, 30, 'minutes', 0.5);
  return {
    minutes,
    seed: Math.floor(number(values.seed, Date.now() % 1_000_000_007, 'seed', 0)),
    // About 90 samples whatever the length, never closer than 5 s.
    sampleSeconds: number(values['sample-seconds'], Math.max(5, Math.round((minutes * 60) / 90)), 'sample-seconds', 1),
    deadlineSeconds: number(values.deadline, 120, 'deadline', 10),
    agents: { bidirectional: Math.floor(number(values.bidirectional, 5, 'bidirectional', 0)), mailbox: Math.floor(number(values.mailbox, 5, 'mailbox', 0)) },
    keep: values.keep ?? false,
  };
}
