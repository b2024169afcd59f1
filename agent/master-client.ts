import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import type { ZodType } from 'zod';
import { AGENT_SIGNATURE_HEADER, keyFingerprint, newNonce, NONCE_HEADER, signAgentRequest } from '../lib/agent-keys.js';
import {
  challengeResponseSchema, enrollResponseSchema, reportResponseSchema, sessionResponseSchema,
  type AgentStatus, type CommandResult, type EnrollResponse, type ReportResponse, type SessionResponse,
} from '../lib/agent-protocol.js';
import { answerSignatureMatches, SIGNATURE_HEADER } from '../lib/request-signing.js';
import type { AgentKey } from './identity.js';
import { errorForStatus, masterMessage, NotAcceptedError, RefusedError, unreachable, UnsignedAnswerError } from './master-errors.js';
import { readText, request } from './master-http.js';

export { MasterAnswerError, NotAcceptedError, RefusedError, RetryLaterError, UnsignedAnswerError, WrongPackageError } from './master-errors.js';

export const AGENT_KEY_HEADER = 'x-propagator-agent-key';
/** A session is renewed this long before it expires, so no call is made with a dying token. */
const RENEW_BEFORE_MS = 5 * 60_000;

interface CallOptions<T> {
  method: 'GET' | 'POST';
  payload?: unknown;
  headers?: Record<string, string>;
  schema: ZodType<T>;
  /** Sign the body with the agent's key (enrollment, sessions: where it proves who it is). */
  prove?: boolean;
  /** The key that must have signed the answer; enrollment learns it from the answer itself. */
  verifyWith: KeyObject | 'from-answer';
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
  private session: { token: string; renewAt: number; serverId: number } | null = null;
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
    const key = createPublicKey(pem);
    const fingerprint = keyFingerprint(key);
    if (this.options.masterFingerprint && fingerprint !== this.options.masterFingerprint) {
      throw new RefusedError(`the master's key ${fingerprint} is not the one given with --master-fingerprint (${this.options.masterFingerprint}): is this the right master?`);
    }
    this.masterKey = key;
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
      const { challenge } = await this.call('api/agent/challenge', { method: 'GET', schema: challengeResponseSchema, verifyWith: key });
      const answer = await this.call('api/agent/session', {
        method: 'POST', payload: { name: this.options.name, keyFingerprint: this.agent.fingerprint, challenge }, schema: sessionResponseSchema, prove: true, verifyWith: key,
      });
      if (answer.state === 'accepted' && answer.token && answer.serverId !== null) {
        this.session = { token: answer.token, serverId: answer.serverId, renewAt: Date.now() + (answer.expiresInSeconds ?? 0) * 1000 - RENEW_BEFORE_MS };
      } else {
        this.session = null;
      }
      return answer;
    })().finally(() => {
      this.opening = null;
    });
    return this.opening;
  }

  /** "Bearer <token>" of a live session, opening one when needed. */
  async authorization(): Promise<string> {
    if (!this.session || Date.now() >= this.session.renewAt) {
      const answer = await this.openSession();
      if (answer.state !== 'accepted' || !this.session) throw new NotAcceptedError(answer.message, answer.state === 'rejected' ? 'rejected' : 'pending');
    }
    return `Bearer ${(this.session as { token: string }).token}`;
  }

  /** Drops the session after the master refused it (expired, or the server's key changed). */
  dropSession(): void {
    this.session = null;
  }

  /** Runs a call with a session; a refused session is reopened once (the master may have restarted with a new key state). */
  async withSession<T>(run: (authorization: string) => Promise<T>): Promise<T> {
    try {
      return await run(await this.authorization());
    } catch (err) {
      if (!(err instanceof RefusedError)) throw err;
      this.dropSession();
      return run(await this.authorization());
    }
  }

  report(status: AgentStatus, results: CommandResult[]): Promise<ReportResponse> {
    return this.withSession((authorization) => this.call('api/agent/report', {
      method: 'POST', payload: { status, results }, headers: { authorization }, schema: reportResponseSchema, verifyWith: this.requireMasterKey(),
    }));
  }

  private requireMasterKey(): KeyObject {
    if (!this.masterKey) throw new RefusedError('this agent does not know its master\'s key: it is not enrolled');
    return this.masterKey;
  }

  /** One JSON call; the answer must be signed for this agent and this request, then it is validated. */
  private async call<T>(route: string, options: CallOptions<T>): Promise<T> {
    const nonce = newNonce();
    const body = options.payload === undefined ? undefined : JSON.stringify(options.payload);
    const headers: Record<string, string> = { accept: 'application/json', [NONCE_HEADER]: nonce, [AGENT_KEY_HEADER]: this.agent.fingerprint, ...options.headers };
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
    const key = options.verifyWith === 'from-answer' ? this.keyFromAnswer(parsed) : options.verifyWith;
    const signed = key !== null && answerSignatureMatches(key, { status, path: `/${route}`, agent: this.agent.fingerprint, nonce, body: text }, headerText(response.headers[SIGNATURE_HEADER]));
    if (!signed && !(options.verifyWith === 'from-answer' && (status < 200 || status > 299))) {
      // Before enrollment the agent cannot check a refusal; anything else unsigned is not the master's.
      throw new UnsignedAnswerError(`the master's answer (${status}) is not signed with the master's key: ignored (is something between this agent and the master?)`);
    }
    if (status < 200 || status > 299) throw errorForStatus(status, masterMessage(text, status), response.headers['retry-after']);
    if (parsed === null) throw new Error('the master answered with something that is not JSON');
    const checked = options.schema.safeParse(parsed);
    if (!checked.success) throw new Error(`the master's answer does not follow the agent protocol (${checked.error.issues[0]?.message ?? 'invalid'})`);
    return checked.data;
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
    const fingerprint = keyFingerprint(key);
    if (this.options.masterFingerprint && fingerprint !== this.options.masterFingerprint) {
      throw new RefusedError(`the master's key ${fingerprint} is not the one given with --master-fingerprint (${this.options.masterFingerprint}): is this the right master?`);
    }
    return key;
  }
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

