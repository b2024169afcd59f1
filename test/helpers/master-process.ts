import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { BIN } from './run.js';

export interface MasterProcess {
  url: string;
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `propagator master` as a real process and waits for it to announce its URL. */
export function startMasterProcess(args: string[], env: NodeJS.ProcessEnv = {}): Promise<MasterProcess> {
  const child = spawn(process.execPath, [BIN, 'master', '--host', '127.0.0.1', '--port', '0', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`master did not start: ${err}`)), 20_000);
    child.stderr?.on('data', (c: Buffer) => {
      err += c.toString();
      const match = /Propagator master: (\S+)/.exec(err);
      if (match?.[1]) {
        clearTimeout(timer);
        resolve({
          url: match[1], child, exited, stdout: () => out, stderr: () => err,
          stop: (signal = 'SIGTERM') => {
            if (child.exitCode === null) child.kill(signal);
            return exited;
          },
        });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`master exited with ${code}: ${err}`));
    });
  });
}

export const BOUNDARY = 'PropagatorTestBoundary';

export function multipartHead(name: string, filename = 'package.pkg'): string {
  return `--${BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\n${name}\r\n` +
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="package"; filename="${filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`;
}

export const multipartTail = `\r\n--${BOUNDARY}--\r\n`;

/** An upload whose body the test writes by hand, to stop, cut or finish it when it chooses. */
export function openUpload(url: string, authorization: string): { request: http.ClientRequest; response: Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> } {
  const request = http.request(`${url}/api/packages`, {
    method: 'POST',
    headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, authorization, 'transfer-encoding': 'chunked' },
  });
  const response = new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
    request.on('response', (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    request.on('error', reject);
  });
  return { request, response };
}

export async function waitFor(check: () => Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}
