import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  /** The client hung up on this answer (its connection reset before it took the whole body). */
  abandoned: boolean;
}

interface Trap {
  match: RegExp;
  delayMs: number;
  cutAfterBytes: number | null;
}

export interface RecordingProxy {
  url: string;
  port: number;
  requests: RecordedRequest[];
  /** The next request matching (method and URL, "GET /bucket/key?…") waits `ms` before it is forwarded. */
  holdNext(match: RegExp, ms: number): void;
  /** The answer to the next request matching is cut after `bytes` of its body. */
  cutNext(match: RegExp, bytes: number): void;
  /** How many traps went off. */
  sprung: number;
  close(): Promise<void>;
}

/**
 * An HTTP relay in front of a server (here, the bucket) that records every request's method, URL
 * and headers, and can hold back or cut the answer to the next request matching a pattern.
 */
export async function startRecordingProxy(targetPort: number): Promise<RecordingProxy> {
  const traps: Trap[] = [];
  const latest = new WeakMap<object, RecordedRequest>();
  const proxy: RecordingProxy = {
    url: '', port: 0, requests: [], sprung: 0, close: async () => undefined,
    holdNext: (match, ms) => traps.push({ match, delayMs: ms, cutAfterBytes: null }),
    cutNext: (match, bytes) => traps.push({ match, delayMs: 0, cutAfterBytes: bytes }),
  };
  const server = http.createServer((req, res) => {
    const record: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, abandoned: false };
    proxy.requests.push(record);
    // Node's response reports itself finished once its bytes are queued on the socket: what tells
    // a client that hung up is its connection closing with an error (a reset) under this answer.
    const socket = req.socket;
    if (!latest.has(socket)) {
      socket.once('close', (hadError: boolean) => {
        const last = latest.get(socket);
        if (hadError && last) last.abandoned = true;
      });
    }
    latest.set(socket, record);
    const at = traps.findIndex((t) => t.match.test(`${req.method} ${req.url}`));
    const trap = at >= 0 ? traps.splice(at, 1)[0] : undefined;
    if (trap) proxy.sprung++;
    setTimeout(() => {
      const upstream = http.request({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        let sent = 0;
        answer.on('data', (chunk: Buffer) => {
          const limit = trap?.cutAfterBytes;
          if (limit !== null && limit !== undefined && sent + chunk.length > limit) {
            res.write(chunk.subarray(0, limit - sent), () => res.destroy());
            answer.destroy();
            return;
          }
          sent += chunk.length;
          res.write(chunk);
        });
        answer.on('end', () => res.end());
        answer.on('error', () => res.destroy());
      });
      upstream.on('error', () => res.destroy());
      req.pipe(upstream);
    }, trap?.delayMs ?? 0);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  proxy.port = (server.address() as AddressInfo).port;
  proxy.url = `http://127.0.0.1:${proxy.port}`;
  proxy.close = () => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
  };
  return proxy;
}
