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
}

/**
 * A man in the middle on a plain-HTTP link between agents and their master: relays every call,
 * and rewrites the answers or downloads the test chooses, as an attacker on the network would.
 */
export async function startTamperingProxy(target: string, tampering: Tampering): Promise<TamperingProxy> {
  const proxy: TamperingProxy = { url: '', requests: [], forgedBytesSent: new Map(), rewritten: 0, close: async () => undefined };
  const server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    proxy.requests.push(`${req.method} ${path}`);
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
