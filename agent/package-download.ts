import { createWriteStream } from 'node:fs';
import { stat, truncate } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { rootCertificates } from 'node:tls';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { MasterClient, Session } from './master-client.js';
import { errorForStatus, MasterAnswerError, masterMessage, NotAcceptedError, RefusedError, RetryLaterError, StoreDownloadError, unreachable, WrongPackageError } from './master-errors.js';
import { readText, request } from './master-http.js';
import { diskErrorCode } from '../lib/disk-errors.js';
import { errorMessage } from '../lib/errors.js';
import { ANSWER_MAC_HEADER } from '../lib/session-crypto.js';

/**
 * Told where each download attempt starts writing (0 for the whole file), it returns a function
 * that sees that attempt's bytes, in order, as they are written (or null). Either throws to stop
 * the download at once (the bytes seen cannot be the announced package).
 */
export type DownloadObserver = (from: number) => Promise<((chunk: Buffer) => void | Promise<void>) | null>;

/** Thrown by an observer: the download stops, and is not retried. */
export class DownloadStoppedError extends Error {
  override name = 'DownloadStoppedError';
}

/** Passes bytes on to the file, showing them to the observer, and never more than `room` of them. */
function guard(room: number, size: number, see: ((chunk: Buffer) => void | Promise<void>) | null): Transform {
  let left = room;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      if (chunk.length > left) {
        done(new WrongPackageError(`the master sent more than the ${size} bytes it announced; the download was stopped`));
        return;
      }
      left -= chunk.length;
      // The observer may ask to wait (the verifier inflating a gzipped container): the download waits with it.
      Promise.resolve()
        .then(() => see?.(chunk))
        .then(() => done(null, chunk), (err: Error) => done(err));
    },
  });
}

const tries = (n: number) => `${n} attempt${n === 1 ? '' : 's'}`;

/** The download could not finish before the target's deadline; the message says what stood in the way. */
export class DeadlineError extends Error {
  override name = 'DeadlineError';
}

export interface RetryPolicy {
  /** This agent's clock (ms) at which the master gives up on the target: retrying stops there. */
  deadline: number;
  /** The longest wait between two attempts (the backoff doubles from 0.5 s up to it). */
  maxDelayMs: number;
}

/**
 * Downloads a package into `partFile`, continuing from what is already there (HTTP Range). Writes
 * at most the `size` the signed command announced. Retries a cut connection or an absent master
 * with backoff until the target's deadline (a master restarted mid-operation is waited for);
 * returns when the file has `size` bytes. What the bytes are worth is for the verifier to say, as
 * they arrive (`observe`). A disk that cannot take the bytes fails at once (`diskErrorCode`).
 */
export async function downloadPackage(
  client: MasterClient, sha256: string, partFile: string, size: number,
  log: (msg: string, fields: Record<string, number | string>) => void, retry: RetryPolicy, observe?: DownloadObserver,
): Promise<void> {
  let lastError = '';
  for (let attempt = 1; ; attempt++) {
    let have = (await stat(partFile).catch(() => null))?.size ?? 0;
    if (have > size) {
      await truncate(partFile, 0);
      have = 0;
    }
    if (have === size) return;
    const left = retry.deadline - Date.now();
    if (left <= 0) throw new DeadlineError(attempt === 1 ? 'no download before the target\'s deadline (it had passed when the download was to begin)' : `no download before the target's deadline (${lastError ? `${lastError}, ` : ''}${tries(attempt - 1)})`);
    // A transfer still under way at the deadline stops there: the master has given up on the target.
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), left);
    // Where the attempt's bytes came from, for the words of its failure (set within the session's callback).
    const origin: { via: 'master' | 'store' } = { via: 'master' };
    try {
      await client.withSession(async (session) => {
        const opened = await openDownload(client, session, sha256, have);
        origin.via = opened.via;
        const response = opened.response;
        const status = response.statusCode ?? 0;
        // 206: the rest follows; 200: the whole file again (the master ignored the range).
        const append = status === 206;
        const total = append ? Number(/\/(\d+)$/.exec(String(response.headers['content-range'] ?? ''))?.[1]) : Number(response.headers['content-length']);
        if (Number.isFinite(total) && total !== size) {
          response.destroy();
          throw new WrongPackageError(`the package the master served is not the one it announced (${total} bytes instead of ${size})`);
        }
        if (have > 0) log(append ? 'download resumed' : 'download restarted', { sha256, from: append ? have : 0 });
        const from = append ? have : 0;
        const see = observe ? await observe(from).catch((err: unknown) => {
          response.destroy();
          throw err;
        }) : null;
        const file = createWriteStream(partFile, { flags: append ? 'a' : 'w', highWaterMark: 1024 * 1024 });
        await pipeline(response, guard(size - from, size, see), file, { signal: stop.signal });
      });
      if ((await stat(partFile)).size === size) return;
      throw new Error('the download ended early');
    } catch (err) {
      // Retrying cannot help when the master refuses this agent or this package, serves another
      // one, or when this slave's disk cannot take the bytes.
      if (err instanceof WrongPackageError || err instanceof DownloadStoppedError || err instanceof RefusedError || err instanceof NotAcceptedError || (err instanceof MasterAnswerError && err.status === 403)) throw err;
      if (diskErrorCode(err)) throw err;
      if (stop.signal.aborted) throw new DeadlineError(`no download before the target's deadline (the transfer was still under way, ${tries(attempt)})`);
      const known = err instanceof MasterAnswerError || err instanceof RetryLaterError || err instanceof StoreDownloadError;
      const translated = known ? err : origin.via === 'store' ? new StoreDownloadError(`the package store's download failed: ${(err as { code?: string }).code ?? errorMessage(err)}`) : unreachable(err);
      lastError = translated.message;
      const remaining = retry.deadline - Date.now();
      if (remaining <= 0) throw new DeadlineError(`no download before the target's deadline (${translated.message}, ${tries(attempt)})`);
      const backoff = Math.min(retry.maxDelayMs, 500 * 2 ** Math.min(attempt - 1, 20));
      const delay = Math.min(remaining, translated instanceof RetryLaterError ? translated.retryAfterMs : backoff);
      log('download interrupted; will resume', { sha256, attempt, delayMs: delay, have: (await stat(partFile).catch(() => null))?.size ?? 0, error: translated.message });
      await new Promise((r) => setTimeout(r, delay));
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Asks the master for the package (from `have` on). It answers with the bytes, or, when its store
 * is a bucket and --store-presign is on, with a 307 to a short-lived presigned URL, under the
 * session's MAC like any refusal: a redirect someone on the network forged is ignored.
 */
async function openDownload(client: MasterClient, session: Session, sha256: string, have: number): Promise<{ response: IncomingMessage; via: 'master' | 'store' }> {
  const route = `api/agent/packages/${sha256}`;
  const call = client.sessionHeaders(session, 'GET', route);
  const range: Record<string, string> = have > 0 ? { range: `bytes=${have}-` } : {};
  const response = await request(new URL(route, client.baseUrl), { method: 'GET', headers: { ...call.headers, ...range }, ca: client.ca, idleTimeoutMs: 60_000 });
  const status = response.statusCode ?? 0;
  if (status === 200 || status === 206) return { response, via: 'master' };
  const text = await readText(response).catch(() => '');
  // A refusal counts only with the session's MAC; a forged one is a network fault, retried.
  if (!client.answerIsGenuine(session, { status, route, nonce: call.nonce, body: text, mac: response.headers[ANSWER_MAC_HEADER] })) {
    if (status === 401) throw new RefusedError('the master refused the session, or something in between did');
    throw new Error(`an answer (${status}) not from the master: ignored`);
  }
  if (status === 307) return { response: await fromStore(text, range, client.ca), via: 'store' };
  throw errorForStatus(status, masterMessage(text, status), response.headers['retry-after']);
}

/**
 * Follows the master's redirect to its bucket, sending only the Range: the session's token and
 * MACs are for the master alone, and a presigned URL carries its own authorisation. The bytes are
 * checked exactly as the master's would be (size, manifest, payload digest, signature).
 */
async function fromStore(answer: string, range: Record<string, string>, ca: Buffer | null): Promise<IncomingMessage> {
  const location = (() => {
    try {
      return (JSON.parse(answer) as { location?: unknown }).location;
    } catch {
      return undefined;
    }
  })();
  const url = typeof location === 'string' && URL.canParse(location) ? new URL(location) : null;
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw new StoreDownloadError('the master redirected the download to no http(s) URL');
  // The master's --ca may be the private CA of its bucket too; the system's CAs stay trusted.
  let response: IncomingMessage;
  try {
    response = await request(url, { method: 'GET', headers: range, ca: ca ? [...rootCertificates, ca] : null, idleTimeoutMs: 60_000 });
  } catch (err) {
    throw new StoreDownloadError(`cannot reach the package store the master redirected to (${(err as { code?: string }).code ?? errorMessage(err)})`);
  }
  const status = response.statusCode ?? 0;
  if (status === 200 || status === 206) return response;
  const body = await readText(response, 64 * 1024).catch(() => '');
  const code = /<Code>([A-Za-z0-9.]{1,64})<\/Code>/.exec(body)?.[1];
  // An expired URL (a download that waited) is not final: the next attempt asks the master for a fresh one.
  throw new StoreDownloadError(`the package store refused the download the master redirected to (${status}${code ? ` ${code}` : ''})`);
}
