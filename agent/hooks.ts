import { spawn } from 'node:child_process';
import { access, constants, stat } from 'node:fs/promises';
import type { Logger } from '../lib/logger.js';
import { bootId, groupMembers, processStamp } from '../lib/process-table.js';

export interface HookResult {
  ok: boolean;
  /** e.g. "exit 3", "killed after 300 s", "not executable" */
  outcome: string;
  outputTail: string;
  /** The hook exited, but processes it started still held its output (a service it started). */
  leftRunning: boolean;
}

/** A running hook as the install journal records it: its process group, and when its leader started. */
export interface HookProcess {
  /** The hook's pid, which is also its process group's id (hooks run detached). */
  pgid: number;
  /** Field 22 of /proc/PID/stat: tells the hook from a later process given the same number. */
  startTime: number;
  bootId: string;
}

const TAIL_BYTES = 4096;
/** Output still in the pipes when the hook exits arrives within this. */
const OUTPUT_GRACE_MS = 1_000;
const TERM_GRACE_MS = 3_000;
const KILL_WAIT_MS = 5_000;

/**
 * The hook waits for a line on stdin before it starts: the agent sends it once the install journal
 * names the hook's process group. An agent killed before that closes the pipe, and the hook never
 * starts; so no hook runs that a restarted agent cannot find. exec keeps the pid (and group).
 */
const GATE = 'read -r go || exit 97; exec "$0" </dev/null';

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // the group is gone already
  }
}

/**
 * Runs a release hook (hooks/apply, hooks/health) in the release directory with the format 1
 * environment, stopping it (and anything it started) after the time limit. `started` is told the
 * hook's process group before the hook runs (for the install journal). The hook ends when its own
 * process exits: a service it started may keep running, and keep the hook's output open; what it
 * writes after a short grace is no longer read. Returns null when the release has no such hook.
 */
export async function runHook(file: string, options: { cwd: string; env: Record<string, string>; timeoutMs: number; started?: (hook: HookProcess) => Promise<void> }): Promise<HookResult | null> {
  const info = await stat(file).catch(() => null);
  if (!info) return null;
  if (!info.isFile() || !(await access(file, constants.X_OK).then(() => true, () => false))) {
    return { ok: false, outcome: 'not an executable file', outputTail: '', leftRunning: false };
  }
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', GATE, file], {
      cwd: options.cwd,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    let tail = Buffer.alloc(0);
    const keep = (chunk: Buffer) => {
      tail = Buffer.concat([tail, chunk]);
      if (tail.length > TAIL_BYTES) tail = tail.subarray(tail.length - TAIL_BYTES);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.stdin.on('error', () => undefined);
    let timedOut = false;
    let notStarted: string | null = null;
    const timer = setTimeout(() => {
      timedOut = true;
      signalGroup(child.pid ?? 0, 'SIGKILL');
    }, options.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ ok: false, outcome: `could not start (${err.message})`, outputTail: '', leftRunning: false });
    });

    const pgid = child.pid;
    if (pgid !== undefined) {
      void (async () => {
        const stamp = await processStamp(pgid);
        await options.started?.({ pgid, startTime: stamp?.startTime ?? 0, bootId: stamp?.bootId ?? await bootId() });
      })().then(() => child.stdin.end('go\n'), (err: unknown) => {
        notStarted = err instanceof Error ? err.message : String(err);
        child.stdin.destroy();
      });
    }

    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      // Output written just before the exit may still be in the pipes: read it for a moment, then
      // let go of pipes a background process keeps open (waiting for them would wait for it).
      const closed = Promise.all([child.stdout, child.stderr].map((s) => new Promise<void>((r) => (s.closed ? r() : s.once('close', () => r())))));
      let grace: NodeJS.Timeout | undefined;
      void Promise.race([closed.then(() => false), new Promise<boolean>((r) => (grace = setTimeout(() => r(true), OUTPUT_GRACE_MS)))]).then((leftRunning) => {
        clearTimeout(grace);
        child.stdout.destroy();
        child.stderr.destroy();
        const outputTail = tail.toString('utf8').trim();
        if (notStarted !== null) resolve({ ok: false, outcome: `not started: ${notStarted}`, outputTail: '', leftRunning: false });
        else if (timedOut) resolve({ ok: false, outcome: `stopped after ${Math.round(options.timeoutMs / 1000)} s`, outputTail, leftRunning });
        else if (code === 0) resolve({ ok: true, outcome: 'exit 0', outputTail, leftRunning });
        else resolve({ ok: false, outcome: signal ? `killed by ${signal}` : `exit ${code}`, outputTail, leftRunning });
      });
    });
  });
}

async function groupGone(pgid: number, withinMs: number): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    if ((await groupMembers(pgid)).length === 0) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * After the agent was killed while a hook ran: stops what is left of that hook's process group
 * (SIGTERM, then SIGKILL), so nothing of an install being rolled back goes on running. A group
 * whose number another program got since is left alone: its leader started at another time (or,
 * the leader gone, a member started before the hook did).
 */
export async function stopInterruptedHook(name: string, hook: HookProcess, log: Logger): Promise<void> {
  // A reboot since then ended the hook; the numbers mean nothing in this boot.
  if (hook.bootId !== (await bootId())) return;
  const members = await groupMembers(hook.pgid);
  if (members.length === 0) return;
  const leader = members.find((m) => m.pid === hook.pgid);
  const ours = leader ? leader.startTime === hook.startTime : members.every((m) => m.startTime >= hook.startTime);
  if (!ours) {
    log.warn('the process group the interrupted hook had is another program\'s now; left alone', { hook: name, pgid: hook.pgid });
    return;
  }
  signalGroup(hook.pgid, 'SIGTERM');
  let forced = false;
  if (!(await groupGone(hook.pgid, TERM_GRACE_MS))) {
    forced = true;
    signalGroup(hook.pgid, 'SIGKILL');
    await groupGone(hook.pgid, KILL_WAIT_MS);
  }
  log.warn('stopped what was left of a hook the agent\'s stop interrupted', { hook: name, pgid: hook.pgid, processes: members.length, forced });
}
