import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { AGENT_KEY_HEADER, AGENT_SIGNATURE_HEADER, generateAgentKey, keyFingerprint, newNonce, NONCE_HEADER, signAgentRequest } from '../../lib/agent-keys.js';
import type { AgentStatus } from '../../lib/agent-protocol.js';
import { answerSignatureMatches, SIGNATURE_HEADER } from '../../lib/request-signing.js';
import { ANSWER_MAC_HEADER, answerMacMatches, CALL_MAC_HEADER, CALL_TIME_HEADER, macCall, newExchange, openSessionKey } from '../../lib/session-crypto.js';


export interface AgentAnswer {
  status: number;
  body: unknown;
  text: string;
  /** Whether the master signed the answer for this agent and this request. */
  signed: boolean;
  headers: Headers;
}

/**
 * An agent whose calls a test (or a benchmark) makes itself, over real HTTP, with a real key: it
 * enrolls, opens sessions and reports exactly as agent processes do, and checks the master's
 * signature on every answer.
 */
export class SimulatedAgent {
  readonly privateKey: KeyObject;
  readonly publicPem: string;
  readonly fingerprint: string;
  masterKey: KeyObject | null = null;
  serverId: number | null = null;
  token: string | null = null;
  /** The session key (session-crypto.ts): calls and answers within the session carry MACs with it. */
  sessionKey: Buffer | null = null;
  /** The master's clock minus ours, learnt when the session opened. */
  clockOffset = 0;

  constructor(readonly url: string, readonly name: string, readonly extra: Partial<AgentStatus> = {}) {
    const key = generateAgentKey();
    this.privateKey = createPrivateKey(key.privatePem);
    this.publicPem = key.publicPem;
    this.fingerprint = keyFingerprint(key.publicPem);
  }

  status(overrides: Partial<AgentStatus> = {}): AgentStatus {
    return { name: this.name, mode: 'mailbox', address: null, product: 'watchdoc', version: '6.1.0', staged: [], freeDiskBytes: null, ...this.extra, ...overrides };
  }

  /** The headers of a call within the session: its token, a fresh nonce, the agent's key, the call's MAC. */
  sessionHeaders(method: 'GET' | 'POST', route: string, body = '', nonce = newNonce()): Record<string, string> {
    if (!this.token || !this.sessionKey) throw new Error(`${this.name} has no session`);
    const time = Date.now() + this.clockOffset;
    return {
      authorization: `Bearer ${this.token}`, [NONCE_HEADER]: nonce, [AGENT_KEY_HEADER]: this.fingerprint, [CALL_TIME_HEADER]: String(time),
      [CALL_MAC_HEADER]: macCall(this.sessionKey, { method, path: route, nonce, time, body }),
    };
  }

  /** One call as agents make them: a fresh nonce, the agent's key named, optionally its proof or its session. */
  async call(method: 'GET' | 'POST', route: string, options: { body?: string; headers?: Record<string, string>; prove?: boolean; nonce?: string; session?: boolean; redirect?: RequestRedirect } = {}): Promise<AgentAnswer> {
    const nonce = options.nonce ?? newNonce();
    const headers: Record<string, string> = { [NONCE_HEADER]: nonce, [AGENT_KEY_HEADER]: this.fingerprint, ...(options.session ? this.sessionHeaders(method, route, options.body ?? '', nonce) : {}), ...options.headers };
    if (options.body !== undefined) headers['content-type'] ??= 'application/json';
    if (options.prove) headers[AGENT_SIGNATURE_HEADER] = signAgentRequest(this.privateKey, { method, path: route, nonce, body: options.body ?? '' });
    const res = await fetch(`${this.url}${route}`, { method, headers, body: options.body, redirect: options.redirect ?? 'follow' });
    const text = await res.text();
    const body = (() => {
      try {
        return JSON.parse(text) as unknown;
      } catch {
        return null;
      }
    })();
    const key = this.masterKey ?? keyFromBody(body);
    const parts = { status: res.status, path: route, agent: this.fingerprint, nonce, body: text };
    const signed = options.session && this.sessionKey
      ? answerMacMatches(this.sessionKey, parts, res.headers.get(ANSWER_MAC_HEADER) ?? undefined)
      : key !== null && answerSignatureMatches(key, parts, res.headers.get(SIGNATURE_HEADER) ?? undefined);
    return { status: res.status, body, text, signed, headers: res.headers };
  }

  async enroll(token: string, status: Partial<AgentStatus> = {}): Promise<AgentAnswer> {
    const answer = await this.call('POST', '/api/agent/enroll', { body: JSON.stringify({ status: this.status(status), publicKey: this.publicPem }), headers: { authorization: `Bearer ${token}` }, prove: true });
    const body = answer.body as { serverId?: number | null; masterPublicKey?: string } | null;
    if (answer.signed && body?.masterPublicKey) this.masterKey = createPublicKey(body.masterPublicKey);
    if (typeof body?.serverId === 'number') this.serverId = body.serverId;
    return answer;
  }

  /** Signs a fresh challenge; keeps the token when the server is accepted. */
  async openSession(): Promise<AgentAnswer> {
    const challenge = await this.call('GET', '/api/agent/challenge');
    const exchange = newExchange();
    const answer = await this.call('POST', '/api/agent/session', {
      body: JSON.stringify({ name: this.name, keyFingerprint: this.fingerprint, challenge: (challenge.body as { challenge: string }).challenge, exchangeKey: exchange.publicRaw }), prove: true,
    });
    const body = answer.body as { token?: string | null; serverId?: number | null; exchangeKey?: string | null; sealedKey?: string | null; serverTime?: number | null } | null;
    if (typeof body?.serverTime === 'number') this.clockOffset = body.serverTime - Date.now();
    this.token = body?.token ?? null;
    this.sessionKey = this.token && body?.exchangeKey && body.sealedKey ? openSessionKey(exchange.privateKey, body.exchangeKey, this.token, body.sealedKey) : null;
    if (typeof body?.serverId === 'number') this.serverId = body.serverId;
    return answer;
  }

  get authorization(): string {
    if (!this.token) throw new Error(`${this.name} has no session`);
    return `Bearer ${this.token}`;
  }

  report(body: unknown, headers: Record<string, string> = {}): Promise<AgentAnswer> {
    const text = typeof body === 'string' ? body : JSON.stringify(body ?? { status: this.status(), results: [] });
    return this.call('POST', '/api/agent/report', { body: text, headers, session: true });
  }

  /** Enrolls (accepted at once: auto-accept or a one-time token) and opens a session. */
  async join(token: string, status: Partial<AgentStatus> = {}): Promise<this> {
    const enrolled = await this.enroll(token, status);
    if (enrolled.status !== 201) throw new Error(`enrollment of ${this.name} answered ${enrolled.status}: ${enrolled.text}`);
    const session = await this.openSession();
    if (!this.token) throw new Error(`no session for ${this.name}: ${session.status} ${session.text}`);
    return this;
  }
}

function keyFromBody(body: unknown): KeyObject | null {
  const pem = (body as { masterPublicKey?: unknown } | null)?.masterPublicKey;
  if (typeof pem !== 'string') return null;
  try {
    return createPublicKey(pem);
  } catch {
    return null;
  }
}
