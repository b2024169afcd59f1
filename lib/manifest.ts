import { z } from 'zod';
import { corrupt } from './errors.js';
import { escapeControl } from './text.js';
import { isValidVersion } from './version.js';

/** What manifest.json states, as format 1 defines it (../shared/package-format.md). */
export interface Manifest {
  format: 1;
  product: string;
  version: string;
  created: string;
  expires?: string;
  minVersion?: string;
  description?: string;
  /** The total size of the payload's regular files once unpacked (a format 1 extension). */
  unpackedSize?: number;
  payload: { path: 'payload.tar.gz'; size: number; sha256: string };
}

export const PAYLOAD_MEMBER = 'payload.tar.gz';
const PRODUCT_PATTERN = /^[a-z0-9._-]{1,64}$/;
const SHA256_PATTERN = /^[0-9a-f]{64}$/;
// ISO 8601 date, or date and time with Z or an offset; Date.parse then rejects impossible dates.
const INSTANT_PATTERN = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2}))?$/;

function rule(field: string, what: string) {
  return {
    error: (issue: { input?: unknown }) =>
      issue.input === undefined ? `manifest has no "${field}" field` : `manifest field "${field}" must be ${what}`,
  };
}

function pattern(field: string, what: string, test: (v: string) => boolean) {
  return z.string(rule(field, what)).refine(test, { error: `manifest field "${field}" must be ${what}` });
}

const instant = (field: string) =>
  pattern(field, 'an ISO 8601 date and time', (v) => INSTANT_PATTERN.test(v) && !Number.isNaN(Date.parse(v)));
const version = (field: string) =>
  pattern(field, '1 to 4 dot-separated numbers (e.g. 6.1.2)', isValidVersion);
const byteCount = (field: string) => {
  const what = rule(field, 'a whole number of bytes');
  return z.number(what).int(what).min(0, what).max(Number.MAX_SAFE_INTEGER, what);
};

const manifestSchema = z.object(
  {
    format: z.literal(1, rule('format', '1')),
    product: pattern('product', '1 to 64 of a-z 0-9 . _ -', (v) => PRODUCT_PATTERN.test(v)),
    version: version('version'),
    created: instant('created'),
    expires: instant('expires').optional(),
    minVersion: version('minVersion').optional(),
    description: z.string(rule('description', 'a string')).max(4096, rule('description', 'at most 4096 characters')).optional(),
    unpackedSize: byteCount('unpackedSize').optional(),
    payload: z.object(
      {
        path: z.literal(PAYLOAD_MEMBER, rule('payload.path', `"${PAYLOAD_MEMBER}"`)),
        size: byteCount('payload.size'),
        sha256: pattern('payload.sha256', '64 lowercase hexadecimal digits', (v) => SHA256_PATTERN.test(v)),
      },
      rule('payload', 'an object with path, size and sha256'),
    ),
  },
  rule('manifest', 'an object'),
);

/** Parses the exact bytes of manifest.json; throws a "corrupt" rejection naming the first problem. */
export function parseManifest(bytes: Buffer): Manifest {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw corrupt('manifest.json is not valid UTF-8');
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    // V8 quotes the text around the error: escaped, like every text from a package.
    throw corrupt(`manifest.json is not valid JSON (${escapeControl(err instanceof Error ? err.message : String(err))})`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw corrupt('manifest.json is not a JSON object');
  }
  const result = manifestSchema.safeParse(data);
  if (!result.success) {
    throw corrupt(result.error.issues[0]?.message ?? 'manifest.json has invalid fields');
  }
  return result.data as Manifest;
}

/** Serialises a manifest the way the builder signs it: stable field order, trailing newline. */
export function serializeManifest(manifest: Manifest): Buffer {
  return Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`, 'utf8');
}
