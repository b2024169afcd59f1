import { spawn, type ChildProcess } from 'node:child_process';
import { BIN } from './run.js';

export interface AgentProcess {
  child: ChildProcess;
  serverId: number;
  address: string | null;
  logs: () => string;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** An agent process just started: its output so far, and the moment it is a server of the domain. */
export interface StartingAgent {
  child: ChildProcess;
  logs: () => string;
  /** Resolves once the agent is enrolled, accepted and started; rejects if it exits first. */
  started: Promise<AgentProcess>;
}

/** Starts `propagator agent` as a real process, without waiting (an agent may wait for acceptance). */
export function spawnAgentProcess(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): StartingAgent {
  const child = spawn(process.execPath, [BIN, 'agent', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const started = new Promise<AgentProcess>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not start: ${err}\n${out}`)), timeoutMs);
    child.stderr?.on('data', (c: Buffer) => {
      err += c.toString();
      const match = /enrolled as server (\d+) with \S+?(?:, listening at (\S+))?$/m.exec(err);
      if (match) {
        clearTimeout(timer);
        resolve({
          child, serverId: Number(match[1]), address: match[2] ?? null, exited,
          logs: () => out + err,
          stop: (signal = 'SIGTERM') => {
            if (child.exitCode === null && child.signalCode === null) child.kill(signal);
            return exited;
          },
        });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`agent exited with ${code}: ${err}\n${out}`), { code, output: out + err }));
    });
  });
  started.catch(() => undefined);
  return { child, logs: () => out + err, started };
}

/** Starts `propagator agent` as a real process; resolves once it has enrolled and started. */
export function startAgentProcess(args: string[], env: NodeJS.ProcessEnv = {}): Promise<AgentProcess> {
  return spawnAgentProcess(args, env).started;
}

/** Runs an agent that is expected to stop by itself; resolves with its exit code and output. */
export function runAgentToExit(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [BIN, 'agent', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, output })));
}
