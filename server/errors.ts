import { PropagatorError } from '../lib/errors.js';

/** Errors that only make sense over HTTP; the error middleware maps every typed error to a status. */
export class AuthenticationError extends PropagatorError {
  override name = 'AuthenticationError';
}

export class ForbiddenError extends PropagatorError {
  override name = 'ForbiddenError';
}

export class BadRequestError extends PropagatorError {
  override name = 'BadRequestError';
}

export class PayloadTooLargeError extends PropagatorError {
  override name = 'PayloadTooLargeError';
}

export class UnsupportedMediaTypeError extends PropagatorError {
  override name = 'UnsupportedMediaTypeError';
}

export class TooManyRequestsError extends PropagatorError {
  override name = 'TooManyRequestsError';
}

/** The request did not arrive in time (a stalled upload); 408. */
export class RequestTimeoutError extends PropagatorError {
  override name = 'RequestTimeoutError';
}

/** The master's disk cannot hold what the client sends; 507. */
export class InsufficientStorageError extends PropagatorError {
  override name = 'InsufficientStorageError';
}

/** The master's disk cannot be written at all (read-only, failing); 503 until someone fixes it. */
export class StorageUnavailableError extends PropagatorError {
  override name = 'StorageUnavailableError';
}

/** What went wrong with the disk, in words an administrator acts on, and its code for the log. */
export interface StorageFault {
  kind: 'full' | 'read-only' | 'failing';
  /** "the master's disk is full" and the like. */
  phrase: string;
  code: string;
}

/**
 * Errno codes of node's fs and SQLite's result codes that mean the disk, not the request, failed.
 * SQLite reports a write refused by a read-only or failing file system as SQLITE_IOERR.
 */
const FAULTS: Record<string, Omit<StorageFault, 'code'>> = {
  ENOSPC: { kind: 'full', phrase: 'the master\'s disk is full' },
  SQLITE_FULL: { kind: 'full', phrase: 'the master\'s disk is full' },
  EDQUOT: { kind: 'full', phrase: 'the master\'s disk is full (its disk quota is reached)' },
  EROFS: { kind: 'read-only', phrase: 'the master\'s disk is read-only' },
  SQLITE_READONLY: { kind: 'read-only', phrase: 'the master\'s disk is read-only' },
  EIO: { kind: 'failing', phrase: 'the master\'s disk failed a write (I/O error)' },
  SQLITE_IOERR: { kind: 'failing', phrase: 'the master\'s disk failed a write (I/O error)' },
};

export function storageFault(err: unknown): StorageFault | null {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return null;
  const fault = FAULTS[code];
  return fault ? { ...fault, code } : null;
}

/**
 * The typed error for a disk failure met while handling a request (null for any other error):
 * 507 when the disk is full, 503 when it cannot be written at all. Nothing the request asked
 * for was kept: its partial file is removed and its transaction rolled back by whoever met it.
 */
export function storageError(err: unknown): PropagatorError | null {
  if (err instanceof PropagatorError) return null;
  const fault = storageFault(err);
  if (!fault) return null;
  const phrase = fault.phrase.charAt(0).toUpperCase() + fault.phrase.slice(1);
  if (fault.kind === 'full') {
    const remedy = fault.code === 'EDQUOT' ? 'Free some space on it or raise the quota' : 'Free some space on it';
    return new InsufficientStorageError(`${phrase} (${fault.code}): nothing was saved. ${remedy}, then try again`, { cause: err });
  }
  const remedy = fault.kind === 'read-only' ? 'Check the disk of the master\'s data folder (a file system turns read-only after errors)' : 'Check the disk of the master\'s data folder';
  return new StorageUnavailableError(`${phrase} (${fault.code}): nothing was saved. ${remedy}, then try again`, { cause: err });
}

/**
 * A database server (PostgreSQL) out of reach or shutting down: node's connection codes, and
 * PostgreSQL's classes 08 (connection) and 57P (shutdown, starting up). Its code, or 'closed' for
 * pg's own words for a connection that ended; null for any other error.
 */
export function unreachableDatabase(err: unknown): string | null {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EPIPE|08...|57P0[1-4])$/.test(code)) return code;
  const message = err instanceof Error ? err.message : '';
  return /^(Connection terminated|timeout exceeded when trying to connect)/i.test(message) ? 'closed' : null;
}

/** The 503 for a request that met a database out of reach: nothing was saved, try again. */
export function databaseUnavailableError(err: unknown): PropagatorError | null {
  const code = unreachableDatabase(err);
  if (code === null) return null;
  return new StorageUnavailableError(`The master cannot reach its database (${code}): nothing was saved. Try again in a moment; if it lasts, check the database server`, { cause: err });
}
