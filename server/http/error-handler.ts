import type { ErrorRequestHandler, Request } from 'express';
import {
  ConfigurationError, ConflictError, NotFoundError, PackageRejectedError, PropagatorError, ValidationError, errorMessage,
} from '../../lib/errors.js';
import {
  AuthenticationError, BadRequestError, ForbiddenError, InsufficientStorageError, PayloadTooLargeError, RequestTimeoutError,
  StorageUnavailableError, TooManyRequestsError, UnsupportedMediaTypeError, databaseUnavailableError, storageError, storageFault,
} from '../errors.js';
import type { Logger } from '../../lib/logger.js';
import { isApiRequest } from './auth-middleware.js';

const STATUS: [new (...args: never[]) => Error, number][] = [
  [PackageRejectedError, 422],
  [ValidationError, 422],
  [BadRequestError, 400],
  [AuthenticationError, 401],
  [ForbiddenError, 403],
  [NotFoundError, 404],
  [RequestTimeoutError, 408],
  [ConflictError, 409],
  [PayloadTooLargeError, 413],
  [UnsupportedMediaTypeError, 415],
  [TooManyRequestsError, 429],
  [ConfigurationError, 503],
  [StorageUnavailableError, 503],
  [InsufficientStorageError, 507],
];

/** The status code and the message a client may see; unexpected errors say nothing internal. */
export function describeError(err: unknown): { status: number; message: string } {
  for (const [type, status] of STATUS) if (err instanceof type) return { status, message: (err as Error).message };
  // Body parsers (express.json/urlencoded) mark their errors with a status and a type.
  const e = err as { status?: number; type?: string };
  if (e.type === 'entity.too.large') return { status: 413, message: 'The request body is too large' };
  if (e.type === 'entity.parse.failed') return { status: 400, message: 'The request body is not valid JSON' };
  if (err instanceof PropagatorError) return { status: 400, message: err.message };
  // A full or failing disk is not the client's fault, nor a bug: say so (507, 503), wherever it was met.
  const storage = storageError(err) ?? databaseUnavailableError(err);
  if (storage) return describeError(storage);
  return { status: 500, message: 'Internal error: the master could not complete this request (see its log)' };
}

const TITLES: Record<number, string> = {
  400: 'Bad request', 401: 'Authentication required', 403: 'Forbidden', 404: 'Not found', 408: 'Too slow', 409: 'Conflict',
  413: 'Too large', 415: 'Wrong content type', 422: 'Refused', 429: 'Too many requests', 500: 'Internal error', 503: 'Unavailable',
  507: 'Disk full',
};

/** ENOSPC, SQLITE_FULL…: the disk's own word, for the log (the client sees a sentence). */
function faultCode(err: unknown): string | undefined {
  return (storageFault(err) ?? storageFault((err as { cause?: unknown } | null)?.cause))?.code;
}

function prefersJson(req: Request): boolean {
  return isApiRequest(req) || req.accepts(['html', 'json']) === 'json';
}

/** The one error handler: typed errors → status codes, rendered as a page or as JSON. */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    const { status, message } = describeError(err);
    // A typed error (a full disk, a setup mistake) says all in its message; a stack helps with the rest.
    const stack = err instanceof Error && !(err instanceof PropagatorError) && !storageFault(err) ? err.stack : undefined;
    if (status >= 500) log.error('request failed', { method: req.method, path: req.path, status, error: errorMessage(err), code: faultCode(err), stack });
    if (res.headersSent) {
      req.socket.destroy();
      return;
    }
    if (status === 401 && isApiRequest(req) && !req.path.startsWith('/api/agent/')) res.set('WWW-Authenticate', 'Basic realm="Propagator", charset="UTF-8"');
    const retryAfter = (err as { retryAfter?: unknown }).retryAfter;
    if (typeof retryAfter === 'number') res.set('Retry-After', String(retryAfter));
    res.status(status);
    if (prefersJson(req)) {
      res.json({ error: message });
      return;
    }
    res.render('error', { title: TITLES[status] ?? 'Error', status, message, user: res.locals.user ?? null });
  };
}
