import { errorMessage } from '../lib/errors.js';

/** The master refused this agent's credentials or token (401): retrying will not help. */
export class RefusedError extends Error {
  override name = 'RefusedError';
}

/** The server waits for the administrator's decision, or was rejected. */
export class NotAcceptedError extends Error {
  override name = 'NotAcceptedError';
  constructor(message: string, readonly state: 'pending' | 'rejected') {
    super(message);
  }
}

/** The master served something else than it announced: retrying will not help. */
export class WrongPackageError extends Error {
  override name = 'WrongPackageError';
}

/**
 * An answer that is not signed with the master's key: whatever it says is ignored, as if the master
 * could not be reached (something between the agent and the master may be forging answers).
 */
export class UnsignedAnswerError extends Error {
  override name = 'UnsignedAnswerError';
}

/** The master is busy (429) and asked to call again later. */
export class RetryLaterError extends Error {
  override name = 'RetryLaterError';
  constructor(message: string, readonly retryAfterMs: number) {
    super(message);
  }
}

/** The bucket the master redirected a download to failed it (unreachable, expired URL): retried, with a fresh redirect. */
export class StoreDownloadError extends Error {
  override name = 'StoreDownloadError';
}

/** The master answered with an error status (its own message included). */
export class MasterAnswerError extends Error {
  override name = 'MasterAnswerError';
  constructor(message: string, readonly status: number) {
    super(message);
  }
}

/** The master's own message from a JSON error body ({"error": "..."}), or the status. */
export function masterMessage(body: string, status: number): string {
  try {
    const parsed = JSON.parse(body) as { error?: unknown };
    return typeof parsed.error === 'string' ? parsed.error : `HTTP ${status}`;
  } catch {
    return `HTTP ${status}`;
  }
}

/** What an error status from the master means to the agent, for JSON calls and downloads alike. */
export function errorForStatus(status: number, message: string, retryAfter: string | string[] | undefined): Error {
  if (status === 401) return new RefusedError(message);
  if (status === 429) {
    const seconds = Number(retryAfter ?? 60);
    return new RetryLaterError(message, (Number.isFinite(seconds) ? seconds : 60) * 1000);
  }
  return new MasterAnswerError(`the master answered ${status}: ${message}`, status);
}

/** A request that got no answer: the network's code says why (ECONNREFUSED, a TLS failure…). */
export function unreachable(err: unknown): Error {
  return new Error(`cannot reach the master: ${(err as { code?: string }).code ?? errorMessage(err)}`);
}
