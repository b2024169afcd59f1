import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { AGENT_TIME_HEADER, REFUSAL_HEADER, REFUSAL_REASONS, type RefusalReason } from '../lib/request-signing.js';
import { offsetFrom } from './clock-offset.js';

/** What the master takes from an agent's answer: two headers, checked against fixed forms. */
export interface AgentAnswer {
  status: number;
  /** The agent's clock minus the master's, when its answer said what its clock read. */
  clockOffsetMs: number | null;
}

/**
 * A call to an agent got no usable answer; `code` says why, as the operation report shows it. When
 * the agent answered, `refusal` is its reason (one word of REFUSAL_REASONS, or null for anything
 * else) and `clockOffsetMs` what its clock read.
 */
export class AgentCallError extends Error {
  override name = 'AgentCallError';
  constructor(message: string, readonly code: string, readonly refusal: RefusalReason | null = null, readonly clockOffsetMs: number | null = null) {
    super(message);
  }
}

function refusalOf(value: string | string[] | undefined): RefusalReason | null {
  return REFUSAL_REASONS.find((reason) => reason === value) ?? null;
}

/**
 * POSTs a signed command to a bidirectional agent and resolves with the status of its answer.
 * What the agent says back is never read beyond its status and two headers (its clock, and its
 * reason for a refusal), whose values count only when they have the expected form: results come
 * through the agent's own reports, so a hostile or broken agent answering a gigabyte, or text meant
 * for the operation report, costs the master nothing. A redirect is an answer like another, never
 * followed: the master calls only the address the administrator accepted.
 */
export function postToAgent(url: URL, headers: Record<string, string>, body: string, timeoutMs: number): Promise<AgentAnswer> {
  return new Promise((resolve, reject) => {
    const client = url.protocol === 'https:' ? https : http;
    const sentAt = Date.now();
    const req = client.request(url, { method: 'POST', headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) }, timeout: timeoutMs }, (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      const clockOffsetMs = offsetFrom(res.headers[AGENT_TIME_HEADER], sentAt, Date.now());
      const refusal = refusalOf(res.headers[REFUSAL_HEADER]);
      res.destroy();
      if (status >= 300 && status < 400) reject(new AgentCallError(`the agent answered ${status} (redirects are not followed)`, `HTTP ${status}, not followed`, null, clockOffsetMs));
      else if (status < 200 || status >= 300) reject(new AgentCallError(`the agent answered ${status}`, `HTTP ${status}`, refusal, clockOffsetMs));
      else resolve({ status, clockOffsetMs });
    });
    req.on('timeout', () => req.destroy(new AgentCallError('the agent did not answer in time', 'ETIMEDOUT')));
    req.on('error', (err: NodeJS.ErrnoException) => reject(err instanceof AgentCallError ? err : new AgentCallError(err.message, err.code ?? 'network error')));
    req.end(body);
  });
}
