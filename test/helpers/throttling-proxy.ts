import net from 'node:net';

export interface ThrottlingProxy {
  url: string;
  /** Request lines seen, in order ("GET /path HTTP/1.1"). */
  requests: string[];
  /** Bytes a second relayed to the client on answers to matching requests; Infinity lets them through. */
  bytesPerSecond: number;
  /** Drops every connection at once, with what is still queued (a machine that went away). */
  cutAll(): void;
  close(): Promise<void>;
}

const TICK_MS = 50;

/**
 * A TCP relay in front of a server (by port, so a server restarted on that port is reached again)
 * that slows the answers to matching requests to a given rate, as a slow link would: long enough
 * for a test to act in the middle of a download. A connection the server drops, or cannot accept,
 * is dropped on the client's side too.
 */
export async function startThrottlingProxy(targetPort: number, options: { match: RegExp; bytesPerSecond: number }): Promise<ThrottlingProxy> {
  const proxy: ThrottlingProxy = { url: '', requests: [], bytesPerSecond: options.bytesPerSecond, cutAll: () => undefined, close: async () => undefined };
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const server = net.createServer((client) => {
    sockets.add(client);
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(upstream);
    let slow = false;
    const queue: Buffer[] = [];
    let queued = 0;
    let upstreamEnded = false;
    const end = () => {
      clearInterval(timer);
      timers.delete(timer);
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    // Sends what the rate allows each tick; the server is paused while too much waits.
    const timer = setInterval(() => {
      let budget = Number.isFinite(proxy.bytesPerSecond) ? Math.max(1, Math.floor((proxy.bytesPerSecond * TICK_MS) / 1000)) : Infinity;
      while (budget > 0 && queue.length > 0) {
        const head = queue[0] as Buffer;
        const piece = head.length <= budget ? head : head.subarray(0, budget);
        if (piece === head) queue.shift();
        else queue[0] = head.subarray(budget);
        budget -= piece.length;
        queued -= piece.length;
        client.write(piece);
      }
      if (queued < 64 * 1024) upstream.resume();
      if (upstreamEnded && queued === 0) end();
    }, TICK_MS);
    timers.add(timer);
    client.on('data', (chunk) => {
      for (const line of chunk.toString('latin1').split('\r\n')) {
        if (/^[A-Z]+ \/\S* HTTP\/1\.[01]$/.test(line)) {
          proxy.requests.push(line);
          slow = options.match.test(line);
        }
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (!slow && queued === 0) {
        client.write(chunk);
        return;
      }
      queue.push(chunk);
      queued += chunk.length;
      if (queued >= 64 * 1024) upstream.pause();
    });
    // What the server sent before it went away still reaches the client, at the rate.
    upstream.on('end', () => (upstreamEnded = true));
    upstream.on('error', end);
    upstream.on('close', () => {
      upstreamEnded = true;
      if (queued === 0) end();
    });
    client.on('error', end);
    client.on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  proxy.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  proxy.cutAll = () => {
    for (const s of sockets) s.destroy();
  };
  proxy.close = () => {
    for (const t of timers) clearInterval(t);
    for (const s of sockets) s.destroy();
    return new Promise((resolve) => server.close(() => resolve()));
  };
  return proxy;
}
