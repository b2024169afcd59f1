import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';

/**
 * The agent's HTTP requests to the master, with node's own client. (It used got: got's stream layer
 * cost more CPU per chunk than a package download itself, and with many agents on a busy host that
 * doubled the time to stage a package; docs/PERFORMANCE.md.)
 */
export interface RequestOptions {
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  /** The CA(s) to trust instead of the system's (the master's --ca); null: the system's. */
  ca: Buffer | (string | Buffer)[] | null;
  /** The connection may stay silent this long before the request fails with ETIMEDOUT. */
  idleTimeoutMs: number;
  body?: string;
}

/** Sends a request; resolves with the response (any status) once its headers are in. */
export function request(url: URL, options: RequestOptions): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const common = { method: options.method, headers: options.headers, timeout: options.idleTimeoutMs };
    const req = url.protocol === 'https:'
      ? https.request(url, { ...common, ...(options.ca ? { ca: options.ca } : {}) }, resolve)
      : http.request(url, common, resolve);
    // Fires while waiting for the answer and while its body streams in: a master that stops
    // sending fails the request, and the caller retries or resumes.
    req.on('timeout', () => req.destroy(Object.assign(new Error('the master stopped answering'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(options.body);
  });
}

/** A whole (small) response body as text; more than `limit` bytes is an error, not a truncation. */
export async function readText(response: IncomingMessage, limit = 1024 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      response.destroy();
      throw Object.assign(new Error(`the master's answer is larger than ${limit} bytes`), { code: 'ETOOLARGE' });
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
