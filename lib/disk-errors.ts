/**
 * Errors a write gets from a disk that cannot take it. Retrying does not help with these, unlike a
 * cut connection: the work fails at once with the sizes, and what was half-written is removed.
 */
const DISK_CODES = new Set(['ENOSPC', 'EDQUOT', 'EROFS']);

export function diskErrorCode(err: unknown): string | null {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && DISK_CODES.has(code) ? code : null;
}

/** The slave's disk cannot hold what it was asked to write; the message names the sizes. */
export class DiskSpaceError extends Error {
  override name = 'DiskSpaceError';
}
