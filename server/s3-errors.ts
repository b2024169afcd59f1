import { errorMessage } from '../lib/errors.js';

/** Codes of a request that never got an answer: the network or the server is down. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ECONNABORTED']);
const REFUSALS = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'Forbidden', 'InvalidToken', 'ExpiredToken', 'AllAccessDisabled']);

interface SdkError {
  name?: unknown;
  code?: unknown;
  message?: unknown;
  $metadata?: { httpStatusCode?: number };
  cause?: unknown;
}

export interface S3Place {
  bucket: string;
  endpoint: string | null;
}

/** `the S3 bucket "b" at http://…` (or `on AWS`): how messages name a bucket. */
export function bucketText(place: S3Place): string {
  return `the S3 bucket "${place.bucket}" ${place.endpoint ? `at ${place.endpoint}` : 'on AWS'}`;
}

function networkCode(err: unknown): string | null {
  for (let e = err as SdkError | undefined, depth = 0; e && depth < 3; e = e.cause as SdkError | undefined, depth++) {
    if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return e.code;
    if (e.name === 'TimeoutError') return 'timed out';
  }
  return null;
}

/**
 * What went wrong with a call to the bucket, as a phrase an administrator acts on (the SDK's own
 * names, "UnknownError" for a HEAD refused without a body, say little). `missing` is how a 404
 * reads for this call: the bucket (HeadBucket) or a package (anything else).
 */
export function describeS3Error(err: unknown, place: S3Place, missing: 'bucket' | 'object' = 'object'): string {
  const e = (err ?? {}) as SdkError;
  const name = typeof e.name === 'string' ? e.name : '';
  const status = e.$metadata?.httpStatusCode;
  const network = networkCode(err);
  if (network) return `cannot reach ${place.endpoint ? `the S3 endpoint ${place.endpoint}` : 'S3'} (${network})`;
  if (name === 'CredentialsProviderError') return 'no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY';
  const said = name && name !== 'Unknown' && name !== 'UnknownError' ? `${name}, ` : '';
  if (REFUSALS.has(name) || status === 403) {
    return `${bucketText(place)} refuses these credentials (${said}HTTP 403): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`;
  }
  if (name === 'NoSuchBucket' || (missing === 'bucket' && status === 404)) return `${bucketText(place)} does not exist (create it first)`;
  if (name === 'PermanentRedirect' || status === 301) return `${bucketText(place)} is in another region (set region= in --store)`;
  const detail = errorMessage(err).replace(/\s+/g, ' ').slice(0, 200);
  return `${bucketText(place)} answered ${status ? `HTTP ${status}` : 'with an error'}${name ? ` (${name})` : ''}${detail && detail !== name && detail !== 'UnknownError' ? `: ${detail}` : ''}`;
}

/** A 404 of an object: the package is not (or no longer) in the bucket. */
export function isMissing(err: unknown): boolean {
  const e = err as SdkError;
  return e?.name === 'NotFound' || e?.name === 'NoSuchKey' || e?.$metadata?.httpStatusCode === 404;
}
