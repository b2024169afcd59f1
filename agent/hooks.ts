import { spawn } from 'node:child_process';
import { access, constants, stat } from 'node:fs/promises';

export interface HookResult {
  ok: boolean;
  /** e.g. "exit 3", "killed after 300 s", "not executable" */
  outcome: string;
  outputTail: string;
}

const TAIL_BYTES = 4096;

/**
 * Runs a release hook (hooks/apply, hooks/health) in the release directory with the format 1
 * environment, stopping it (and anything it started) after the time limit. Returns null when the
 * release has no such hook.
 */
export async function runHook(file: string, options: { cwd: string; env: Record<string, string>; timeoutMs: number }): Promise<HookResult | null> {
  const info = await stat(file).catch(() => null);
  if (!info) return null;
  if (!info.isFile() || !(await access(file, constants.X_OK).then(() => true, () => false))) {
    return { ok: false, outcome: 'not an executable file', outputTail: '' };
  }
  return new Promise((resolve) => {
    const child = spawn(file, [], {
      cwd: options.cwd,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let tail = Buffer.alloc(0);
    const keep = (chunk: Buffer) => {
      tail = Buffer.concat([tail, chunk]);
      if (tail.length > TAIL_BYTES) tail = tail.subarray(tail.length - TAIL_BYTES);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-(child.pid ?? 0), 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, options.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ ok: false, outcome: `could not start (${err.message})`, outputTail: '' });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const outputTail = tail.toString('utf8').trim();
      if (timedOut) resolve({ ok: false, outcome: `stopped after ${Math.round(options.timeoutMs / 1000)} s`, outputTail });
      else if (code === 0) resolve({ ok: true, outcome: 'exit 0', outputTail });
      else resolve({ ok: false, outcome: signal ? `killed by ${signal}` : `exit ${code}`, outputTail });
    });
  });
}
