import http from 'node:http';

export interface PacedRequest {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string;
}

export interface PacedResult {
  completed: number;
  failed: number;
  rate: number;
  p50: number;
  p99: number;
  max: number;
}

/**
 * An open-loop load at a steady pace: request i is due at i/rate seconds, and its latency counts
 * from when it was due, not from when it went out (so a stalled server is not excused by the load
 * generator waiting for it). autocannon's overallRate sends each connection's quota for the second
 * at once, every second, so its "500 per second" arrives as one burst of 500: slaves calling on
 * their own jittered timers do not do that.
 */
export async function pacedLoad(options: { url: string; rate: number; seconds: number; request: (i: number) => PacedRequest; maxSockets?: number }): Promise<PacedResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 64 });
  const base = new URL(options.url);
  const total = Math.round(options.rate * options.seconds);
  const latencies: number[] = [];
  let failed = 0;
  const inFlight = new Set<Promise<void>>();
  const send = (i: number, dueNs: bigint) => {
    const r = options.request(i);
    const done = new Promise<void>((resolve) => {
      const req = http.request({ host: base.hostname, port: base.port, method: r.method, path: r.path, headers: r.headers, agent }, (res) => {
        res.resume();
        res.on('end', () => {
          if ((res.statusCode ?? 0) >= 400) failed++;
          latencies.push(Number(process.hrtime.bigint() - dueNs) / 1e6);
          resolve();
        });
      });
      req.on('error', () => {
        failed++;
        resolve();
      });
      req.end(r.body);
    });
    inFlight.add(done);
    void done.then(() => inFlight.delete(done));
  };
  const start = process.hrtime.bigint();
  const intervalNs = BigInt(Math.round(1e9 / options.rate));
  let sent = 0;
  while (sent < total) {
    const now = process.hrtime.bigint();
    while (sent < total && start + BigInt(sent) * intervalNs <= now) {
      send(sent, start + BigInt(sent) * intervalNs);
      sent++;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(inFlight);
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const at = (q: number) => Math.round((latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0) * 10) / 10;
  return { completed: latencies.length, failed, rate: latencies.length / elapsed, p50: at(0.5), p99: at(0.99), max: at(1) };
}
