import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { BenchContext } from './run.js';
import { peakRssMb, round, startBenchMaster, type Figure } from './support.js';

/** A stranger's connection: the headers of a 1 MiB agent report, then its body a little at a time. */
function slowSender(port: number, route: string, stop: { stopped: boolean }, stats: { opened: number; refused: number }): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let timer: NodeJS.Timeout | undefined;
    socket.on('connect', () => {
      stats.opened++;
      socket.write(`POST ${route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${1024 * 1024}\r\nX-Propagator-Nonce: ${'n'.repeat(22)}\r\n\r\n`);
      let sent = 0;
      // 1 MiB in about a minute: 16 KiB a second.
      timer = setInterval(() => {
        if (sent < 1024 * 1024 && !socket.destroyed) {
          socket.write(Buffer.alloc(16 * 1024, 0x20));
          sent += 16 * 1024;
        }
      }, 1000);
    });
    socket.on('data', (c: Buffer) => {
      if (/^HTTP\/1\.1 4\d\d/.test(c.toString('latin1'))) stats.refused++;
    });
    const done = () => {
      clearInterval(timer);
      socket.destroy();
      resolve();
    };
    socket.on('error', done);
    socket.on('close', done);
    if (stop.stopped) done();
  });
}

/** Keeps `count` such connections open for the whole flood: a refused one is replaced at once. */
async function flood(port: number, route: string, count: number, stop: { stopped: boolean }, stats: { opened: number; refused: number }): Promise<void> {
  await Promise.all(Array.from({ length: count }, async () => {
    while (!stop.stopped) await slowSender(port, route, stop, stats);
  }));
}

function healthLatency(url: string): Promise<number> {
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    http.get(`${url}/health`, (res) => {
      res.resume();
      res.on('end', () => resolve(Number(process.hrtime.bigint() - started) / 1e6));
    }).on('error', () => resolve(Number.POSITIVE_INFINITY));
  });
}

/**
 * 5. Unauthenticated flood of the agent API: 300 connections, each sending the headers of a 1 MiB
 * report and then its body slowly (replaced as soon as the master hangs up), while /health is
 * measured. The master's peak memory is compared with its own before the flood.
 */
export async function floodScenario(ctx: BenchContext): Promise<Figure[]> {
  const seconds = ctx.quick ? 8 : 20;
  const connections = 300;
  const master = await startBenchMaster(['--data', path.join(ctx.work, 'flood-master'), '--trust', ctx.trust], { PROPAGATOR_ADMIN_PASSWORD: 'bench-password', PROPAGATOR_ENROLL_TOKEN: 'bench-enroll-token-0123456789' });
  try {
    const pid = master.child.pid as number;
    const port = Number(new URL(master.url).port);
    for (let i = 0; i < 20; i++) await healthLatency(master.url);
    const before = await peakRssMb(pid);
    const stop = { stopped: false };
    const stats = { opened: 0, refused: 0 };
    const attackers = Promise.all([
      flood(port, '/api/agent/report', connections / 2, stop, stats),
      flood(port, '/api/agent/enroll', connections / 2, stop, stats),
    ]);
    const latencies: number[] = [];
    const until = Date.now() + seconds * 1000;
    while (Date.now() < until) {
      latencies.push(await healthLatency(master.url));
      await new Promise((r) => setTimeout(r, 100));
    }
    stop.stopped = true;
    await attackers;
    const peak = await peakRssMb(pid);
    latencies.sort((a, b) => a - b);
    const p99 = latencies[Math.floor(latencies.length * 0.99)] ?? 0;
    const worst = latencies[latencies.length - 1] ?? 0;
    return [
      { scenario: 'flood', name: 'master_peak_rss', value: peak, unit: 'MB', reference: { what: 'the same master before the flood', value: before, unit: 'MB' }, target: '< 250 MB', met: peak < 250 },
      { scenario: 'flood', name: 'health_p99_during_flood', value: round(p99, 1), unit: 'ms', target: '< 100 ms', met: p99 < 100 },
      { scenario: 'flood', name: 'health_worst_during_flood', value: round(worst, 1), unit: 'ms' },
      { scenario: 'flood', name: 'connections_opened', value: stats.opened, unit: `connections in ${seconds} s` },
      { scenario: 'flood', name: 'refused_before_body', value: stats.refused, unit: 'answers' },
    ];
  } finally {
    await master.stop();
  }
}
