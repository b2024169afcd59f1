import { createWriteStream } from 'node:fs';
import { readFile, stat, truncate } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import got, { HTTPError, type Got } from 'got';
import {
  enrollResponseSchema, reportResponseSchema, type AgentStatus, type CommandResult, type EnrollResponse, type ReportResponse,
} from '../lib/agent-protocol.js';
import { errorMessage } from '../lib/errors.js';
import { bearer, type Identity } from './identity.js';

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

function masterMessage(err: HTTPError): string {
  const body = err.response.body;
  try {
    const parsed = JSON.parse(typeof body === 'string' ? body : Buffer.isBuffer(body) ? body.toString() : JSON.stringify(body)) as { error?: string };
    return parsed.error ?? `HTTP ${err.response.statusCode}`;
  } catch {
    return `HTTP ${err.response.statusCode}`;
  }
}

function translate(err: unknown): Error {
  if (err instanceof HTTPError) {
    const status = err.response.statusCode;
    if (status === 401) return new RefusedError(masterMessage(err));
    if (status === 429) {
      const seconds = Number(err.response.headers['retry-after'] ?? 60);
      return new RetryLaterError(masterMessage(err), (Number.isFinite(seconds) ? seconds : 60) * 1000);
    }
    return new Error(`the master answered ${status}: ${masterMessage(err)}`);
  }
  return new Error(`cannot reach the master: ${(err as { code?: string }).code ?? errorMessage(err)}`);
}

/** Everything the agent asks of the master. Bad answers are validated, never trusted. */
export class MasterClient {
  private readonly http: Got;

  constructor(private readonly masterUrl: string, ca: Buffer | null) {
    this.http = got.extend({
      prefixUrl: masterUrl,
      retry: { limit: 0 },
      timeout: { request: 30_000 },
      https: ca ? { certificateAuthority: ca } : {},
    });
  }

  static async create(masterUrl: string, caFile: string | null): Promise<MasterClient> {
    return new MasterClient(masterUrl, caFile ? await readFile(caFile) : null);
  }

  async enroll(status: AgentStatus, token: string): Promise<EnrollResponse> {
    try {
      const body = await this.http.post('api/agent/enroll', { json: { ...status, token } }).json();
      return enrollResponseSchema.parse(body);
    } catch (err) {
      throw translate(err);
    }
  }

  async report(identity: Identity, status: AgentStatus, results: CommandResult[]): Promise<ReportResponse> {
    try {
      const body = await this.http.post('api/agent/report', { json: { status, results }, headers: { authorization: bearer(identity) } }).json();
      return reportResponseSchema.parse(body);
    } catch (err) {
      throw translate(err);
    }
  }

  /**
   * Downloads a package into `partFile`, continuing from what is already there (HTTP Range).
   * Retries a cut connection with backoff; returns when the file has `size` bytes. What the bytes
   * are worth is for the verifier to say, not for this transfer.
   */
  async download(identity: Identity, sha256: string, partFile: string, size: number, log: (msg: string, fields: Record<string, number | string>) => void): Promise<void> {
    const attempts = 8;
    for (let attempt = 1; ; attempt++) {
      let have = (await stat(partFile).catch(() => null))?.size ?? 0;
      if (have > size) {
        await truncate(partFile, 0);
        have = 0;
      }
      if (have === size) return;
      try {
        const stream = this.http.stream(`api/agent/packages/${sha256}`, {
          headers: { authorization: bearer(identity), ...(have > 0 ? { range: `bytes=${have}-` } : {}) },
          timeout: { request: undefined, socket: 60_000 },
        });
        const response = await new Promise<{ statusCode: number; headers: Record<string, string | string[] | undefined> }>((resolve, reject) => {
          stream.once('response', resolve);
          stream.once('error', reject);
        });
        // 206: the rest follows; 200: the whole file again (the master ignored the range).
        const append = response.statusCode === 206;
        const total = append ? Number(/\/(\d+)$/.exec(String(response.headers['content-range'] ?? ''))?.[1]) : Number(response.headers['content-length']);
        if (Number.isFinite(total) && total !== size) {
          stream.destroy();
          throw new WrongPackageError(`the package the master served is not the one it announced (${total} bytes instead of ${size})`);
        }
        if (have > 0) log(append ? 'download resumed' : 'download restarted', { sha256, from: append ? have : 0 });
        await pipeline(stream, createWriteStream(partFile, { flags: append ? 'a' : 'w' }));
        if (((await stat(partFile)).size) === size) return;
        throw new Error('the download ended early');
      } catch (err) {
        if (err instanceof WrongPackageError) throw err;
        const translated = err instanceof RefusedError ? err : translate(err);
        if (translated instanceof RefusedError || attempt >= attempts) throw translated;
        if (err instanceof HTTPError && err.response.statusCode === 403) throw translated;
        const delay = Math.min(30_000, 500 * 2 ** (attempt - 1));
        log('download interrupted; will resume', { sha256, attempt, delayMs: delay, have: (await stat(partFile).catch(() => null))?.size ?? 0 });
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }
}
