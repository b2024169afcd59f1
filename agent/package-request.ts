import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';

/**
 * One GET of a package from the master, with node's own HTTP client rather than got: got's stream
 * layer costs more CPU per chunk than the transfer itself, and with many agents on a busy host that
 * doubled the time to stage a package (docs/PERFORMANCE.md). Resolves with the response, whatever
 * its status; the caller reads the status and the body.
 */
export function requestPackage(url: URL, headers: Record<string, string>, ca: Buffer | null, socketTimeoutMs: number): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const options = { method: 'GET', headers, timeout: socketTimeoutMs };
    const request = url.protocol === 'https:'
      ? https.request(url, { ...options, ...(ca ? { ca } : {}) }, resolve)
      : http.request(url, options, resolve);
    // The socket timeout covers a master that stops sending: the response errors and the caller resumes.
    request.on('timeout', () => request.destroy(Object.assign(new Error('the master stopped sending'), { code: 'ETIMEDOUT' })));
    request.on('error', reject);
    request.end();
  });
}

/** The body of an error answer, as text (at most 64 KiB read: it is only a message). */
export async function readErrorBody(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 64 * 1024) break;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
