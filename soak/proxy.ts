import net from 'node:net';

export interface ResettingProxy {
  url: string;
  /** Connections relayed so far. */
  connections: () => number;
  /** Bytes relayed from the master to the agents so far. */
  relayed: () => number;
  /** Resets every connection open right now (RST to the agent, the master's side closed): a network blip. */
  resetAll(): number;
  close(): Promise<void>;
}

/**
 * Relays the master's answers at most `bytesPerSecond` per connection: on loopback a big download
 * would take a fraction of a second, and faults would seldom find one in flight.
 */
function relayThrottled(from: net.Socket, to: net.Socket, bytesPerSecond: number, count: (n: number) => void): void {
  const started = Date.now();
  let relayed = 0;
  const held = { drain: false, rate: false };
  const release = (why: keyof typeof held) => {
    held[why] = false;
    if (!held.drain && !held.rate) from.resume();
  };
  from.on('data', (chunk: Buffer) => {
    relayed += chunk.length;
    count(chunk.length);
    if (!to.write(chunk)) {
      held.drain = true;
      to.once('drain', () => release('drain'));
    }
    const aheadMs = (relayed / bytesPerSecond) * 1000 - (Date.now() - started);
    if (aheadMs > 20) {
      held.rate = true;
      setTimeout(() => release('rate'), aheadMs).unref();
    }
    if (held.drain || held.rate) from.pause();
  });
}

/**
 * The agents' way to the master: a TCP relay on loopback that the fault injector can cut, as slow
 * as a branch office's link. When the master is down, a new connection is closed at once, as a
 * dead master behind a router would be.
 */
export async function startResettingProxy(targetPort: number, bytesPerSecond: number): Promise<ResettingProxy> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  let count = 0;
  let bytes = 0;
  const server = net.createServer((client) => {
    count++;
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream);
    relayThrottled(upstream, client, bytesPerSecond, (n) => (bytes += n));
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of pair) {
      socket.on('error', end);
      socket.on('close', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    connections: () => count,
    relayed: () => bytes,
    resetAll: () => {
      const open = [...pairs];
      for (const pair of open) {
        pairs.delete(pair);
        pair[0].resetAndDestroy();
        pair[1].destroy();
      }
      return open.length;
    },
    close: () => {
      for (const [client, upstream] of pairs) {
        client.destroy();
        upstream.destroy();
      }
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
