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
