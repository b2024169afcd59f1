import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { freePort, tempDir } from './run.js';

/** Debian's nginx, as a load balancer in front of several masters. */
export interface Balancer {
  url: string;
  configFile: string;
  errorLog(): Promise<string>;
  stop(): Promise<void>;
}

export function nginxUnavailable(): string | null {
  return existsSync('/usr/sbin/nginx') ? null : 'nginx is not installed (Debian: apt-get install nginx; .ci/run installs it)';
}

/**
 * The configuration README.md shows for several masters, with the upstream ports and the test's
 * own folders filled in: streams both ways (uploads and package downloads are never buffered), and
 * a request that cannot reach one master goes to the next, POSTs included (every agent call can be
 * heard twice: nonces and command ids make a repeat harmless).
 */
export function balancerConfig(options: { listen: string; masters: string[]; dir: string }): string {
  const { dir } = options;
  return `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
${process.getuid?.() === 0 ? 'user root;\n' : ''}events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;

  upstream propagator_masters {
${options.masters.map((m) => `    server ${m} max_fails=1 fail_timeout=5s;`).join('\n')}
    keepalive 32;
  }
  server {
    listen ${options.listen};
    client_max_body_size 0;
    location / {
      proxy_pass http://propagator_masters;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_connect_timeout 2s;
      proxy_read_timeout 300s;
      proxy_send_timeout 300s;
      proxy_next_upstream error timeout http_502 http_503 non_idempotent;
      proxy_next_upstream_tries 3;
    }
  }
}
`;
}

export async function startBalancer(masters: string[]): Promise<Balancer> {
  const { dir, cleanup } = await tempDir('propagator-nginx-');
  for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await mkdir(path.join(dir, sub));
  const port = await freePort();
  const configFile = path.join(dir, 'nginx.conf');
  await writeFile(configFile, balancerConfig({ listen: `127.0.0.1:${port}`, masters, dir }));
  const child: ChildProcess = spawn('/usr/sbin/nginx', ['-c', configFile, '-p', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${stderr}`);
    if (await fetch(`${url}/health`).then(() => true, () => false)) break;
    if (Date.now() > deadline) throw new Error(`nginx did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    configFile,
    errorLog: () => readFile(path.join(dir, 'error.log'), 'utf8').catch(() => ''),
    async stop() {
      if (child.exitCode === null) child.kill('SIGQUIT');
      await exited;
      await cleanup();
    },
  };
}
