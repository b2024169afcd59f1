import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface TamperingProxy {
  url: string;
  /** "METHOD /path" of each request relayed. */
  requests: string[];
  /** Bytes of forged downloads the proxy managed to send before the agent hung up, by path. */
  forgedBytesSent: Map<string, number>;
  /** How many answers were rewritten. */
  rewritten: number;
  close(): Promise<void>;
}

export interface Tampering {
  /** A new body for a JSON answer (headers, signature included, are kept), or null to leave it. */
  rewriteAnswer?: (path: string, body: string) => string | null;
  /** Bytes to serve instead of a package download (as a 200 of that length), or null to relay it. */
  forgeDownload?: (path: string) => { bytes: Buffer; contentLength: number | null } | null;
  /** Cuts the first relayed download after this many bytes (the agent then resumes with a Range). */
  cutFirstDownloadAfter?: number;
  /** Bytes to serve (206) instead of the rest of a resumed download, given the total size. */
  forgeResume?: (path: string, from: number, total: number) => Buffer | null;
}

/**
 * A man in the middle on a plain-HTTP link between agents and their master: relays every call,
 * and rewrites the answers or downloads the test chooses, as an attacker on the network would.
 */
export async function startTamperingProxy(target: string, tampering: Tampering): Promise<TamperingProxy> {
  const proxy: TamperingProxy = { url: '', requests: [], forgedBytesSent: new Map(), rewritten: 0, close: async () => undefined };
  let cutDone = false;
  const server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    proxy.requests.push(`${req.method} ${path}`);
    const range = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''));
    if (req.method === 'GET' && range && tampering.forgeResume) {
      const from = Number(range[1]);
      // The size as the master would say it: ask it for the length without the body.
      const probe = http.request(new URL(path, target), { method: 'GET', headers: { ...req.headers, range: 'bytes=0-0' } }, (answer) => {
        answer.resume();
        const total = Number(/\/(\d+)$/.exec(String(answer.headers['content-range'] ?? ''))?.[1]);
        const bytes = tampering.forgeResume?.(path, from, total) ?? null;
        if (!bytes) {
          res.writeHead(502).end();
          return;
        }
        req.resume();
        res.writeHead(206, { 'content-type': 'application/octet-stream', 'content-length': bytes.length, 'content-range': `bytes ${from}-${total - 1}/${total}` });
        proxy.forgedBytesSent.set(path, bytes.length);
        res.end(bytes);
      });
      probe.on('error', () => res.destroy());
      probe.end();
      return;
    }
    const forged = req.method === 'GET' ? tampering.forgeDownload?.(path) : null;
    if (forged) {
      req.resume();
      res.writeHead(200, forged.contentLength === null ? { 'content-type': 'application/octet-stream' } : { 'content-type': 'application/octet-stream', 'content-length': forged.contentLength });
      let sent = 0;
      const pump = () => {
        while (sent < forged.bytes.length) {
          const piece = forged.bytes.subarray(sent, sent + 16 * 1024);
          sent += piece.length;
          proxy.forgedBytesSent.set(path, sent);
          if (!res.write(piece)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('close', () => proxy.forgedBytesSent.set(path, Math.min(sent, res.socket?.bytesWritten ?? sent)));
      pump();
      return;
    }
    const upstream = http.request(new URL(path, target), { method: req.method, headers: req.headers }, (answer) => {
      const rewrite = tampering.rewriteAnswer;
      const cutAfter = tampering.cutFirstDownloadAfter;
      if (cutAfter !== undefined && !cutDone && req.method === 'GET' && path.startsWith('/api/agent/packages/')) {
        cutDone = true;
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        let sent = 0;
        answer.on('data', (c: Buffer) => {
          const room = cutAfter - sent;
          sent += c.length;
          if (room <= 0) return;
          const last = sent >= cutAfter;
          res.write(c.subarray(0, room), () => {
            // Cut once those bytes are out, as a network that fails mid-transfer would.
            if (last) setTimeout(() => res.socket?.destroy(), 50);
          });
          if (last) answer.destroy();
        });
        return;
      }
      if (!rewrite || !/json/.test(String(answer.headers['content-type'] ?? ''))) {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
        return;
      }
      const chunks: Buffer[] = [];
      answer.on('data', (c: Buffer) => chunks.push(c));
      answer.on('end', () => {
        const original = Buffer.concat(chunks).toString('utf8');
        const changed = rewrite(path, original);
        const body = changed ?? original;
        if (changed !== null) proxy.rewritten++;
        res.writeHead(answer.statusCode ?? 502, { ...answer.headers, 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy.close = () => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
  };
  return proxy;
}
