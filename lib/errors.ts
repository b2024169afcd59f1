/**
 * Typed errors shared by the master, the agent and the command line. Services throw these; the
 * edges (CLI, HTTP error middleware) map them to exit codes and status codes in one place each.
 */

export class PropagatorError extends Error {
  override name = 'PropagatorError';
}

/** The input is malformed (a bad flag, a bad form field); the caller can correct it. */
export class ValidationError extends PropagatorError {
  override name = 'ValidationError';
}

export class NotFoundError extends PropagatorError {
  override name = 'NotFoundError';
}

export class ConflictError extends PropagatorError {
  override name = 'ConflictError';
}

/** Local setup is wrong (unreadable trust store, missing key); not the package's fault. */
export class ConfigurationError extends PropagatorError {
  override name = 'ConfigurationError';
}

export type RejectionKind = 'corrupt' | 'not-secure';

/**
 * A package was refused. The message is the sentence shown to administrators, e.g.
 * "This update package is not secure: the signer certificate has expired (2021-01-01)".
 */
export class PackageRejectedError extends PropagatorError {
  override name = 'PackageRejectedError';
  readonly kind: RejectionKind;
  readonly reason: string;

  constructor(kind: RejectionKind, reason: string) {
    super(`This update package is ${kind === 'corrupt' ? 'corrupt' : 'not secure'}: ${reason}`);
    this.kind = kind;
    this.reason = reason;
  }
}

/**
 * The master served another package than the one it announced: not a damaged file but a
 * substitution, which the agent reports as such.
 */
export class PackageMismatchError extends PropagatorError {
  override name = 'PackageMismatchError';
}

export function corrupt(reason: string): PackageRejectedError {
  return new PackageRejectedError('corrupt', reason);
}

export function notSecure(reason: string): PackageRejectedError {
  return new PackageRejectedError('not-secure', reason);
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
