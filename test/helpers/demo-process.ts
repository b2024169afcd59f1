import { spawn, type ChildProcess } from 'node:child_process';
import { BIN } from './run.js';

export interface DemoProcess {
  child: ChildProcess;
  url: string;
  password: string;
  output: () => string;
  exited: Promise<number | null>;
}

/** Runs `propagator demo` as a real process and waits until it says it is running. */
export function startDemo(dir: string): Promise<DemoProcess> {
  const child = spawn(process.execPath, [BIN, 'demo', '--dir', dir, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the demo did not start: ${out}`)), 60_000);
    const check = () => {
      const url = /Console: +(\S+)/.exec(out)?.[1];
      const password = /Log in as: admin \/ (\S+)/.exec(out)?.[1];
      if (url && password && out.includes('Ctrl-C stops everything')) {
        clearTimeout(timer);
        resolve({ child, url, password, output: () => out, exited });
      }
    };
    child.stdout?.on('data', check);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the demo exited with ${code}: ${out}`));
    });
  });
}
