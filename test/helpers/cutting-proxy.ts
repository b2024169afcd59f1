import net from 'node:net';

export interface CuttingProxy {
  url: string;
  /** Request heads seen, in order ("GET /path HTTP/1.1\r\n...headers"). */
  requests: string[];
  cuts: number;
  close(): Promise<void>;
}

/**
 * A TCP relay in front of a server that cuts the first response to a matching request after a
 * number of bytes, as a flaky network would. Everything else passes through untouched.
 */
export async function startCuttingProxy(targetPort: number, options: { match: RegExp; cutAfterBytes: number; times?: number }): Promise<CuttingProxy> {
  const proxy: CuttingProxy = { url: '', requests: [], cuts: 0, close: async () => undefined };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(upstream);
    let pending = '';
    let bodyLeft = 0;
    let cutting = false;
    let relayed = 0;
    client.on('data', (chunk) => {
      pending += chunk.toString('latin1');
      for (;;) {
        if (bodyLeft > 0) {
          const skip = Math.min(bodyLeft, pending.length);
          pending = pending.slice(skip);
          bodyLeft -= skip;
          if (bodyLeft > 0) break;
        }
        const end = pending.indexOf('\r\n\r\n');
        if (end < 0) break;
        const head = pending.slice(0, end);
        pending = pending.slice(end + 4);
        proxy.requests.push(head);
        bodyLeft = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        cutting = options.match.test(head.split('\r\n')[0] ?? '') && proxy.cuts < (options.times ?? 1);
        relayed = 0;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (cutting) {
        relayed += chunk.length;
        if (relayed > options.cutAfterBytes) {
          proxy.cuts++;
          cutting = false;
          client.write(chunk.subarray(0, chunk.length - (relayed - options.cutAfterBytes)), () => {
            client.destroy();
            upstream.destroy();
          });
          return;
        }
      }
      client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  proxy.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  proxy.close = () => {
    for (const s of sockets) s.destroy();
    return new Promise((resolve) => server.close(() => resolve()));
  };
  return proxy;
}
