import path from 'node:path';
import { ValidationError } from '../lib/errors.js';

/** Where the master keeps its packages (--store): a folder, or an S3-compatible bucket. */
export type StoreSetting =
  | {
    kind: 'folder';
    path: string;
    /** Any folder but DATA/packages is taken for a mount other masters share (SHARED_SAFE_AGE_MS). */
    shared: boolean;
  }
  | {
    kind: 's3';
    bucket: string;
    /** null: AWS itself. */
    endpoint: string | null;
    region: string;
    forcePathStyle: boolean;
    /** '' or a key prefix ending with '/'. */
    prefix: string;
    /** Multipart uploads send parts of this size. */
    partSize: number;
  };

const MIB = 1024 * 1024;
/** S3's own limits on a part of a multipart upload (except the last one). */
const MIN_PART = 5 * MIB;
const MAX_PART = 5 * 1024 * MIB;
/** 4 parts in flight per upload (lib-storage's queue): 32 MiB of memory per upload to a bucket. */
export const DEFAULT_PART_SIZE = 8 * MIB;
/** The longest a presigned URL may live on S3 (SigV4): 7 days. */
export const MAX_PRESIGN_SECONDS = 604_800;

export const S3_URL_FORM = 's3://BUCKET?endpoint=URL&region=REGION&forcePathStyle=true&prefix=PATH&partSize=SIZE';
const PARAMETERS = ['endpoint', 'region', 'forcePathStyle', 'prefix', 'partSize'] as const;
const NO_CREDENTIALS = 'give them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the URL is shown in process lists and logs)';

function invalid(message: string): ValidationError {
  return new ValidationError(`--store: ${message}`);
}

/** Shown in a message: never more than a bounded, printable excerpt of what the user typed. */
function quoted(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
}

const SIZES: Record<string, number> = { '': 1, b: 1, k: 1024, kib: 1024, m: MIB, mib: MIB, g: 1024 * MIB, gib: 1024 * MIB };

function partSizeOf(text: string): number {
  const match = /^(\d+)\s*([a-z]*)$/i.exec(text.trim());
  const unit = SIZES[(match?.[2] ?? 'x').toLowerCase()];
  const bytes = match && unit !== undefined ? Number(match[1]) * unit : NaN;
  if (!(bytes >= MIN_PART && bytes <= MAX_PART)) throw invalid('partSize must be 5MiB to 5GiB (e.g. partSize=16MiB)');
  return bytes;
}

function endpointOf(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw invalid('endpoint must be an http:// or https:// URL (e.g. endpoint=http://127.0.0.1:9000)');
  }
  if (url.username || url.password) throw invalid(`the endpoint must not carry credentials: ${NO_CREDENTIALS}`);
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search || url.hash) {
    throw invalid('endpoint must be an http:// or https:// URL (e.g. endpoint=http://127.0.0.1:9000)');
  }
  return url.href.replace(/\/$/, '');
}

function prefixOf(text: string): string {
  const trimmed = text.replace(/^\/+|\/+$/g, '');
  const parts = trimmed.split('/');
  if (trimmed.length > 200 || !/^[A-Za-z0-9!_.*'()/-]+$/.test(trimmed) || parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw invalid('prefix must be 1 to 200 of A-Z a-z 0-9 ! _ . * \' ( ) - /, with no empty, "." or ".." part');
  }
  return `${trimmed}/`;
}

/**
 * A bucket URL: s3://bucket?endpoint=…&region=…&forcePathStyle=…&prefix=…&partSize=…. Credentials
 * never come from it (they would show in `ps` and in logs): only from the AWS SDK's own chain,
 * the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment variables first. The value itself is
 * never repeated in a message, in case it holds a secret after all.
 */
function parseS3Url(text: string): StoreSetting {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw invalid(`not a valid S3 URL; expected ${S3_URL_FORM}`);
  }
  if (url.username || url.password) throw invalid(`the URL must not carry credentials: ${NO_CREDENTIALS}`);
  if (!url.hostname) throw invalid(`the URL names no bucket; expected ${S3_URL_FORM}`);
  if (url.port || (url.pathname !== '' && url.pathname !== '/') || url.hash) {
    throw invalid('only the bucket goes after s3://; give the server as ?endpoint=URL and the key prefix as ?prefix=PATH');
  }
  const bucket = url.hostname;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket) || bucket.includes('..')) {
    throw invalid(`${quoted(bucket)} is not a valid bucket name (3 to 63 of a-z 0-9 . -, beginning and ending with a letter or digit)`);
  }
  const given = new Map<string, string>();
  for (const [key, value] of url.searchParams) {
    if (!(PARAMETERS as readonly string[]).includes(key)) throw invalid(`unknown parameter ${quoted(key)} (known: ${PARAMETERS.join(', ')})`);
    if (given.has(key)) throw invalid(`parameter "${key}" is given twice`);
    given.set(key, value);
  }
  const region = given.get('region') ?? 'us-east-1';
  if (!/^[a-z0-9-]{1,32}$/.test(region)) throw invalid('region must be lower-case letters, digits and dashes (e.g. region=us-east-1)');
  const pathStyle = given.get('forcePathStyle') ?? 'false';
  if (pathStyle !== 'true' && pathStyle !== 'false') throw invalid('forcePathStyle must be true or false');
  const endpoint = given.get('endpoint');
  const prefix = given.get('prefix');
  const partSize = given.get('partSize');
  return {
    kind: 's3',
    bucket,
    endpoint: endpoint === undefined ? null : endpointOf(endpoint),
    region,
    forcePathStyle: pathStyle === 'true',
    prefix: prefix === undefined ? '' : prefixOf(prefix),
    partSize: partSize === undefined ? DEFAULT_PART_SIZE : partSizeOf(partSize),
  };
}

/** --store / PROPAGATOR_STORE: absent, DATA/packages; a folder; or an s3:// URL. */
export function parseStoreSetting(text: string | undefined, dataDir: string, cwd: string): StoreSetting {
  const ownFolder = path.join(dataDir, 'packages');
  if (text === undefined) return { kind: 'folder', path: ownFolder, shared: false };
  if (text.trim() === '') throw invalid('empty; give a folder or an s3:// URL');
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(text)?.[1]?.toLowerCase();
  if (scheme === 's3') return parseS3Url(text);
  if (scheme !== undefined && text.slice(scheme.length + 1).startsWith('//')) {
    throw invalid(`${quoted(`${scheme}://`)} is not supported; give a folder or an s3:// URL`);
  }
  const folder = path.resolve(cwd, text);
  if (folder === dataDir || folder === path.join(dataDir, 'tmp') || folder.startsWith(`${path.join(dataDir, 'tmp')}${path.sep}`)) {
    throw invalid('the package folder cannot be the data folder itself or its tmp folder');
  }
  return { kind: 'folder', path: folder, shared: folder !== ownFolder };
}

/** --store-presign: seconds a presigned URL lives; only a bucket can give them. */
export function parsePresign(text: string | undefined, store: StoreSetting): number | null {
  if (text === undefined) return null;
  const seconds = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(seconds) || seconds < 1 || seconds > MAX_PRESIGN_SECONDS) {
    throw new ValidationError(`--store-presign must be a whole number of seconds from 1 to ${MAX_PRESIGN_SECONDS} (7 days, the most S3 allows)`);
  }
  if (store.kind !== 's3') throw new ValidationError('--store-presign needs an s3:// store: packages in a folder are always served through the master');
  return seconds;
}
