import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import type { ZodType } from 'zod';
import { AGENT_KEY_HEADER, AGENT_SIGNATURE_HEADER, keyFingerprint, newNonce, NONCE_HEADER, signAgentRequest } from '../lib/agent-keys.js';
import {
  challengeResponseSchema, enrollResponseSchema, reportResponseSchema, sessionResponseSchema,
  type AgentStatus, type CommandResult, type EnrollResponse, type ReportResponse, type SessionResponse,
} from '../lib/agent-protocol.js';
import { answerSignatureMatches, SIGNATURE_HEADER } from '../lib/request-signing.js';
import { ANSWER_MAC_HEADER, answerMacMatches, CALL_MAC_HEADER, CALL_TIME_HEADER, macCall, newExchange, openSessionKey } from '../lib/session-crypto.js';
import type { AgentKey } from './identity.js';
import { errorForStatus, masterMessage, NotAcceptedError, RefusedError, unreachable, UnsignedAnswerError } from './master-errors.js';
import { readText, request } from './master-http.js';

export { MasterAnswerError, NotAcceptedError, RefusedError, RetryLaterError, UnsignedAnswerError, WrongPackageError } from './master-errors.js';

/** A session is renewed this long before it expires, so no call is made with a dying token. */
const RENEW_BEFORE_MS = 5 * 60_000;

/** A live session: its token and its key (calls and answers carry MACs with it). */
export interface Session {
  token: string;
  key: Buffer;
  serverId: number;
  renewAt: number;
  /** The master's clock minus this agent's, learnt at opening: calls are stamped in master time. */
  clockOffset: number;
}

interface CallOptions<T> {
  method: 'GET' | 'POST';
  payload?: unknown;
  headers?: Record<string, string>;
  schema: ZodType<T>;
  /** Sign the body with the agent's key (enrollment, sessions: where it proves who it is). */
  prove?: boolean;
  /**
   * What must vouch for the answer: the master's key (a signature), the session (a MAC), the key
   * the answer itself brings (enrollment), or nothing (the challenge, worthless to a forger).
   */
  verifyWith: KeyObject | Session | 'from-answer' | 'nothing';
}

/**
 * Everything the agent asks of the master, over sessions opened with its own key. Every answer
 * must carry the master's signature over this agent, the nonce sent with the request and the body:
 * an answer without it is ignored as if the master could not be reached. Bad answers are validated,
 * never trusted.
 */
export class MasterClient {
  readonly baseUrl: URL;
  private masterKey: KeyObject | null = null;
  private session: Session | null = null;
  private opening: Promise<SessionResponse> | null = null;

  constructor(masterUrl: string, readonly ca: Buffer | null, private readonly agent: AgentKey, private readonly options: { name: string; masterFingerprint: string | null }) {
    // A trailing slash makes relative paths resolve under a master mounted below a path prefix.
    this.baseUrl = new URL(masterUrl.endsWith('/') ? masterUrl : `${masterUrl}/`);
  }

  static async create(masterUrl: string, caFile: string | null, agent: AgentKey, options: { name: string; masterFingerprint: string | null }): Promise<MasterClient> {
    return new MasterClient(masterUrl, caFile ? await readFile(caFile) : null, agent, options);
  }

  /** The master key saved at enrollment; refused when it is not the one the administrator pinned. */
  setMasterKey(pem: string): void {
    this.masterKey = this.pinned(createPublicKey(pem));
  }

  /** The key itself, when it is the one given with --master-fingerprint (or none was given). */
  private pinned(key: KeyObject): KeyObject {
    const fingerprint = keyFingerprint(key);
    if (this.options.masterFingerprint && fingerprint !== this.options.masterFingerprint) {
      throw new RefusedError(`the master's key ${fingerprint} is not the one given with --master-fingerprint (${this.options.masterFingerprint}): is this the right master?`);
    }
    return key;
  }

  get serverId(): number | null {
    return this.session?.serverId ?? null;
  }

  enroll(status: AgentStatus, token: string): Promise<EnrollResponse> {
    return this.call('api/agent/enroll', {
      method: 'POST', payload: { status, publicKey: this.agent.publicPem }, headers: { authorization: `Bearer ${token}` },
      schema: enrollResponseSchema, prove: true, verifyWith: 'from-answer',
    });
  }

  /** Opens a session by signing a fresh challenge; where the enrollment stands when not accepted. */
  openSession(): Promise<SessionResponse> {
    this.opening ??= (async () => {
      const key = this.requireMasterKey();
      const { challenge } = await this.call('api/agent/challenge', { method: 'GET', schema: challengeResponseSchema, verifyWith: 'nothing' });
      const exchange = newExchange();
      const answer = await this.call('api/agent/session', {
        method: 'POST', payload: { name: this.options.name, keyFingerprint: this.agent.fingerprint, challenge, exchangeKey: exchange.publicRaw },
        schema: sessionResponseSchema, prove: true, verifyWith: key,
      });
      this.session = null;
      if (answer.state === 'accepted' && answer.token && answer.serverId !== null) {
        const sessionKey = answer.exchangeKey && answer.sealedKey ? openSessionKey(exchange.privateKey, answer.exchangeKey, answer.token, answer.sealedKey) : null;
        if (!sessionKey) throw new UnsignedAnswerError('the session key the master sent does not open: session not used (is something between this agent and the master?)');
        this.session = {
          token: answer.token, key: sessionKey, serverId: answer.serverId, renewAt: Date.now() + (answer.expiresInSeconds ?? 0) * 1000 - RENEW_BEFORE_MS,
          clockOffset: (answer.serverTime ?? Date.now()) - Date.now(),
        };
      }
      return answer;
    })().finally(() => {
      this.opening = null;
    });
    return this.opening;
  }

  /** A live session, opened when needed. */
  async liveSession(): Promise<Session> {
    if (!this.session || Date.now() >= this.session.renewAt) {
      const answer = await this.openSession();
      if (answer.state !== 'accepted' || !this.session) throw new NotAcceptedError(answer.message, answer.state === 'rejected' ? 'rejected' : 'pending');
    }
    return this.session as Session;
  }

  /** "Bearer <token>" of a live session (tests make calls by hand with it). */
  async authorization(): Promise<string> {
    return `Bearer ${(await this.liveSession()).token}`;
  }

  /** Drops the session after the master refused it (expired, or the server's key changed). */
  dropSession(): void {
    this.session = null;
  }

  /**
   * Runs a call within a session. A refusal reopens the session once: the answer to a session
   * opening is signed, so whether this agent is still a server of the domain is learnt from there,
   * never from a refusal someone on the network could have forged.
   */
  async withSession<T>(run: (session: Session) => Promise<T>): Promise<T> {
    try {
      return await run(await this.liveSession());
    } catch (err) {
      if (!(err instanceof RefusedError)) throw err;
      this.dropSession();
      return run(await this.liveSession());
    }
  }

  /** Also says what this agent's clock reads (under the call's MAC): the master shows the offset. */
  report(status: AgentStatus, results: CommandResult[]): Promise<ReportResponse> {
    return this.withSession((session) => this.call('api/agent/report', {
      method: 'POST', payload: { status, results, agentTime: Date.now() }, schema: reportResponseSchema, verifyWith: session,
    }));
  }

  /** Headers of a session call (a download): the token, a fresh nonce, the agent's key, the call's MAC. */
  sessionHeaders(session: Session, method: 'GET' | 'POST', route: string, body = ''): { headers: Record<string, string>; nonce: string } {
    const nonce = newNonce();
    const time = Date.now() + session.clockOffset;
    return {
      nonce,
      headers: {
        authorization: `Bearer ${session.token}`, [NONCE_HEADER]: nonce, [AGENT_KEY_HEADER]: this.agent.fingerprint, [CALL_TIME_HEADER]: String(time),
        [CALL_MAC_HEADER]: macCall(session.key, { method, path: `/${route}`, nonce, time, body }),
      },
    };
  }

  /** Whether an answer within a session carries the session's MAC for this call. */
  answerIsGenuine(session: Session, answer: { status: number; route: string; nonce: string; body: string; mac: string | string[] | undefined }): boolean {
    return answerMacMatches(session.key, { status: answer.status, path: `/${answer.route}`, agent: this.agent.fingerprint, nonce: answer.nonce, body: answer.body }, headerText(answer.mac));
  }

  private requireMasterKey(): KeyObject {
    if (!this.masterKey) throw new RefusedError('this agent does not know its master\'s key: it is not enrolled');
    return this.masterKey;
  }

  /** One JSON call; the answer must be signed for this agent and this request, then it is validated. */
  private async call<T>(route: string, options: CallOptions<T>): Promise<T> {
    const body = options.payload === undefined ? undefined : JSON.stringify(options.payload);
    const session = isSession(options.verifyWith) ? options.verifyWith : null;
    const call = session ? this.sessionHeaders(session, options.method, route, body ?? '') : { nonce: newNonce(), headers: {} };
    const nonce = call.nonce;
    const headers: Record<string, string> = { accept: 'application/json', [NONCE_HEADER]: nonce, [AGENT_KEY_HEADER]: this.agent.fingerprint, ...call.headers, ...options.headers };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (options.prove) headers[AGENT_SIGNATURE_HEADER] = signAgentRequest(this.agent.privateKey, { method: options.method, path: `/${route}`, nonce, body: body ?? '' });
    let response: IncomingMessage;
    let text: string;
    try {
      response = await request(new URL(route, this.baseUrl), { method: options.method, headers, ca: this.ca, idleTimeoutMs: 30_000, body });
      text = await readText(response);
    } catch (err) {
      throw unreachable(err);
    }
    const status = response.statusCode ?? 0;
    const parsed = parseJson(text);
    if (!this.vouchedFor(options.verifyWith, { status, route, nonce, text, parsed, response })) {
      // A refusal without a signature or MAC only makes the agent open (or ask for) a session
      // again, and back off: nothing final rests on it. Anything else unvouched for is not the master's.
      if (status === 401) throw new RefusedError(masterMessage(text, status));
      throw new UnsignedAnswerError(`the master's answer (${status}) is not signed with the master's key: ignored (is something between this agent and the master?)`);
    }
    if (status < 200 || status > 299) throw errorForStatus(status, masterMessage(text, status), response.headers['retry-after']);
    if (parsed === null) throw new Error('the master answered with something that is not JSON');
    const checked = options.schema.safeParse(parsed);
    if (!checked.success) throw new Error(`the master's answer does not follow the agent protocol (${checked.error.issues[0]?.message ?? 'invalid'})`);
    return checked.data;
  }

  private vouchedFor(by: CallOptions<unknown>['verifyWith'], a: { status: number; route: string; nonce: string; text: string; parsed: unknown; response: IncomingMessage }): boolean {
    if (by === 'nothing') return true;
    if (isSession(by)) return this.answerIsGenuine(by, { status: a.status, route: a.route, nonce: a.nonce, body: a.text, mac: a.response.headers[ANSWER_MAC_HEADER] });
    // Before enrollment the agent cannot check a refusal: it shows it, and acts on nothing else.
    if (by === 'from-answer' && (a.status < 200 || a.status > 299)) return true;
    const key = by === 'from-answer' ? this.keyFromAnswer(a.parsed) : by;
    return key !== null && answerSignatureMatches(key, { status: a.status, path: `/${a.route}`, agent: this.agent.fingerprint, nonce: a.nonce, body: a.text }, headerText(a.response.headers[SIGNATURE_HEADER]));
  }

  /** Enrollment: the master's key comes in the answer, and must match --master-fingerprint when given. */
  private keyFromAnswer(parsed: unknown): KeyObject | null {
    const pem = (parsed as { masterPublicKey?: unknown } | null)?.masterPublicKey;
    if (typeof pem !== 'string') return null;
    let key: KeyObject;
    try {
      key = createPublicKey(pem);
    } catch {
      return null;
    }
    return this.pinned(key);
  }
}

function isSession(value: unknown): value is Session {
  return typeof value === 'object' && value !== null && 'token' in value && Buffer.isBuffer((value as { key?: unknown }).key);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}

function headerText(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

