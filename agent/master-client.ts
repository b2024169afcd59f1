import { createWriteStream } from 'node:fs';
import { readFile, stat, truncate } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ZodType } from 'zod';
import {
  enrollResponseSchema, reportResponseSchema, type AgentStatus, type CommandResult, type EnrollResponse, type ReportResponse,
} from '../lib/agent-protocol.js';
import { errorMessage } from '../lib/errors.js';
import { bearer, type Identity } from './identity.js';
import { readText, request } from './master-http.js';

/** The master refused this agent's credentials or token (401): retrying will not help. */
export class RefusedError extends Error {
  override name = 'RefusedError';
}

/** The master served something else than it announced: retrying will not help. */
export class WrongPackageError extends Error {
  override name = 'WrongPackageError';
}

/** The master is busy (429) and asked to call again later. */
export class RetryLaterError extends Error {
  override name = 'RetryLaterError';
  constructor(message: string, readonly retryAfterMs: number) {
    super(message);
  }
}

/** The master answered with an error status (its own message included). */
export class MasterAnswerError extends Error {
  override name = 'MasterAnswerError';
  constructor(message: string, readonly status: number) {
    super(message);
  }
}

/** The master's own message from a JSON error body ({"error": "..."}), or the status. */
function masterMessage(body: string, status: number): string {
  try {
    const parsed = JSON.parse(body) as { error?: unknown };
    return typeof parsed.error === 'string' ? parsed.error : `HTTP ${status}`;
  } catch {
    return `HTTP ${status}`;
  }
}

/** What an error status from the master means to the agent, for JSON calls and downloads alike. */
function errorForStatus(status: number, message: string, retryAfter: string | string[] | undefined): Error {
  if (status === 401) return new RefusedError(message);
  if (status === 429) {
    const seconds = Number(retryAfter ?? 60);
    return new RetryLaterError(message, (Number.isFinite(seconds) ? seconds : 60) * 1000);
  }
  return new MasterAnswerError(`the master answered ${status}: ${message}`, status);
}

/** A request that got no answer: the network's code says why (ECONNREFUSED, a TLS failure…). */
function unreachable(err: unknown): Error {
  return new Error(`cannot reach the master: ${(err as { code?: string }).code ?? errorMessage(err)}`);
}

/**
 * Told where each download attempt starts writing (0 for the whole file), it may return a function
 * that sees that attempt's bytes, in order, as they are written.
 */
export type DownloadObserver = (from: number) => ((chunk: Buffer) => void) | null;

function tap(see: (chunk: Buffer) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      see(chunk);
      done(null, chunk);
    },
  });
}

/** Everything the agent asks of the master. Bad answers are validated, never trusted. */
export class MasterClient {
  private readonly baseUrl: URL;

  constructor(masterUrl: string, private readonly ca: Buffer | null) {
    // A trailing slash makes relative paths resolve under a master mounted below a path prefix.
    this.baseUrl = new URL(masterUrl.endsWith('/') ? masterUrl : `${masterUrl}/`);
  }

  static async create(masterUrl: string, caFile: string | null): Promise<MasterClient> {
    return new MasterClient(masterUrl, caFile ? await readFile(caFile) : null);
  }

  enroll(status: AgentStatus, token: string): Promise<EnrollResponse> {
    return this.call('api/agent/enroll', { ...status, token }, {}, enrollResponseSchema);
  }

  report(identity: Identity, status: AgentStatus, results: CommandResult[]): Promise<ReportResponse> {
    return this.call('api/agent/report', { status, results }, { authorization: bearer(identity) }, reportResponseSchema);
  }

  /** One JSON call; the answer is validated, never trusted. */
  private async call<T>(route: string, payload: unknown, headers: Record<string, string>, schema: ZodType<T>): Promise<T> {
    let response: IncomingMessage;
    let text: string;
    try {
      response = await request(new URL(route, this.baseUrl), {
        method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', ...headers }, ca: this.ca, idleTimeoutMs: 30_000, body: JSON.stringify(payload),
      });
      text = await readText(response);
    } catch (err) {
      throw unreachable(err);
    }
    const status = response.statusCode ?? 0;
    if (status < 200 || status > 299) throw errorForStatus(status, masterMessage(text, status), response.headers['retry-after']);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new Error('the master answered with something that is not JSON');
    }
    const checked = schema.safeParse(parsed);
    if (!checked.success) throw new Error(`the master's answer does not follow the agent protocol (${checked.error.issues[0]?.message ?? 'invalid'})`);
    return checked.data;
  }

  /**
   * Downloads a package into `partFile`, continuing from what is already there (HTTP Range).
   * Retries a cut connection with backoff; returns when the file has `size` bytes. What the bytes
   * are worth is for the verifier to say, not for this transfer; `observe` lets it see them as they
   * are written.
   */
  async download(identity: Identity, sha256: string, partFile: string, size: number, log: (msg: string, fields: Record<string, number | string>) => void, observe?: DownloadObserver): Promise<void> {
    const attempts = 8;
    for (let attempt = 1; ; attempt++) {
      let have = (await stat(partFile).catch(() => null))?.size ?? 0;
      if (have > size) {
        await truncate(partFile, 0);
        have = 0;
      }
      if (have === size) return;
      try {
        const response = await request(new URL(`api/agent/packages/${sha256}`, this.baseUrl), {
          method: 'GET', headers: { authorization: bearer(identity), ...(have > 0 ? { range: `bytes=${have}-` } : {}) }, ca: this.ca, idleTimeoutMs: 60_000,
        });
        const status = response.statusCode ?? 0;
        if (status !== 200 && status !== 206) throw errorForStatus(status, masterMessage(await readText(response).catch(() => ''), status), response.headers['retry-after']);
        // 206: the rest follows; 200: the whole file again (the master ignored the range).
        const append = status === 206;
        const total = append ? Number(/\/(\d+)$/.exec(String(response.headers['content-range'] ?? ''))?.[1]) : Number(response.headers['content-length']);
        if (Number.isFinite(total) && total !== size) {
          response.destroy();
          throw new WrongPackageError(`the package the master served is not the one it announced (${total} bytes instead of ${size})`);
        }
        if (have > 0) log(append ? 'download resumed' : 'download restarted', { sha256, from: append ? have : 0 });
        const see = observe?.(append ? have : 0);
        const file = createWriteStream(partFile, { flags: append ? 'a' : 'w', highWaterMark: 1024 * 1024 });
        await (see ? pipeline(response, tap(see), file) : pipeline(response, file));
        if (((await stat(partFile)).size) === size) return;
        throw new Error('the download ended early');
      } catch (err) {
        // Retrying cannot help when the master refuses this agent or this package, or serves another one.
        if (err instanceof WrongPackageError || err instanceof RefusedError || (err instanceof MasterAnswerError && err.status === 403)) throw err;
        const translated = err instanceof MasterAnswerError || err instanceof RetryLaterError ? err : unreachable(err);
        if (attempt >= attempts) throw translated;
        const delay = translated instanceof RetryLaterError ? translated.retryAfterMs : Math.min(30_000, 500 * 2 ** (attempt - 1));
        log('download interrupted; will resume', { sha256, attempt, delayMs: delay, have: (await stat(partFile).catch(() => null))?.size ?? 0 });
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }
}
