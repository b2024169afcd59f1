import http from 'node:http';
import https from 'node:https';

/** A call to an agent got no usable answer; `code` says why, as the operation report shows it. */
export class AgentCallError extends Error {
  override name = 'AgentCallError';
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

/**
 * POSTs a signed command to a bidirectional agent and resolves with the status of its answer.
 * What the agent says back is never read: only the status matters (results come through the
 * agent's own reports), so a hostile or broken agent answering a gigabyte costs the master nothing.
 * A redirect is an answer like another, never followed: the master calls only the address the
 * administrator accepted.
 */
export function postToAgent(url: URL, headers: Record<string, string>, body: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const client = url.protocol === 'https:' ? https : http;
    const req = client.request(url, { method: 'POST', headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) }, timeout: timeoutMs }, (res) => {
      const status = res.statusCode ?? 0;
      res.destroy();
      if (status >= 300 && status < 400) reject(new AgentCallError(`the agent answered ${status} (redirects are not followed)`, `HTTP ${status}, not followed`));
      else if (status < 200 || status >= 300) reject(new AgentCallError(`the agent answered ${status}`, `HTTP ${status}`));
      else resolve(status);
    });
    req.on('timeout', () => req.destroy(new AgentCallError('the agent did not answer in time', 'ETIMEDOUT')));
    req.on('error', (err: NodeJS.ErrnoException) => reject(err instanceof AgentCallError ? err : new AgentCallError(err.message, err.code ?? 'network error')));
    req.end(body);
  });
}
