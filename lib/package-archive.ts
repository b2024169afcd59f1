import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Parser, type ReadEntry } from 'tar';
import { corrupt, PackageRejectedError, ValidationError } from './errors.js';
import { PAYLOAD_MEMBER } from './manifest.js';

/** The four members of a format 1 package; the payload is only measured, never held. */
export interface PackageMembers {
  manifestBytes: Buffer;
  signature: Buffer;
  signerPem: Buffer;
  payload: { size: number; sha256: string };
}

const KIB = 1024;
const SMALL_MEMBERS = new Map<string, number>([
  ['manifest.json', 64 * KIB],
  ['manifest.sig', 1 * KIB],
  ['signer.pem', 64 * KIB],
]);
const REQUIRED = ['manifest.json', 'manifest.sig', 'signer.pem', PAYLOAD_MEMBER];
const REGULAR_FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);

/** Names as stored in a tar; one leading "./" is tolerated, as the format says. */
export function memberName(raw: string): string {
  return raw.startsWith('./') ? raw.slice(2) : raw;
}

/**
 * Why an archive member name is unsafe, or null. Shared by the container and payload readers
 * because format 1 applies the same rules to both.
 */
export function unsafeNameReason(raw: string): string | null {
  if (raw.length === 0) return 'has an empty name';
  if (raw.includes('\0')) return 'has a NUL character in its name';
  if (raw.startsWith('/') || /^[A-Za-z]:[\\/]/.test(raw)) return 'has an absolute name';
  if (raw.split(/[\\/]/).includes('..')) return 'has ".." in its name';
  return null;
}

function describeType(type: string): string {
  switch (type) {
    case 'Directory':
    case 'GNUDumpDir':
      return 'is a directory';
    case 'SymbolicLink':
      return 'is a symbolic link';
    case 'Link':
      return 'is a hard link';
    case 'CharacterDevice':
    case 'BlockDevice':
      return 'is a device';
    case 'FIFO':
      return 'is a FIFO';
    default:
      return `is not a regular file (${type})`;
  }
}

/** A reason for a tar or gzip error; nothing read yet means the file is no archive at all. */
export function tarReason(err: Error & { code?: string }, membersSeen: number): string {
  const text = err.message.replace(/^[A-Z_]+: /, '');
  if (err.code?.startsWith('Z_') || /zlib|gzip|header check/i.test(text)) {
    return `the archive is unreadable (bad gzip data: ${text})`;
  }
  if (membersSeen === 0) return `the file is not a tar or tar.gz archive (${text})`;
  return `the archive is unreadable (${text})`;
}

/**
 * Parses a package container from bytes written to it in order (plain or gzipped tar, detected by
 * magic bytes), enforcing the container rules of format 1, step 1; `members` settles after end(),
 * or earlier at the first violation. Fed by a file (readPackageArchive) or by a download as it
 * arrives, so an agent reads a package once instead of twice.
 */
export class PackageArchiveReader {
  readonly members: Promise<PackageMembers>;
  private readonly parser = new Parser({ strict: true });
  private bytes = 0;
  private settled = false;
  private failWith: (err: Error) => void = () => undefined;

  constructor() {
    this.members = new Promise((resolve, reject) => {
      const seen = new Set<string>();
      const small = new Map<string, Buffer>();
      let payload: { size: number; sha256: string } | undefined;
      this.failWith = (err: Error) => {
        if (this.settled) return;
        this.settled = true;
        reject(err);
      };
      const fail = this.failWith;

      this.parser.on('entry', (entry: ReadEntry) => {
        if (this.settled) return entry.resume();
        const raw = entry.path;
        const unsafe = unsafeNameReason(raw);
        if (unsafe) return fail(corrupt(`member "${raw}" ${unsafe}`));
        if (!REGULAR_FILE_TYPES.has(entry.type)) return fail(corrupt(`member "${raw}" ${describeType(entry.type)}`));
        const name = memberName(raw);
        if (!REQUIRED.includes(name)) return fail(corrupt(`unexpected member "${raw}" (a package holds only ${REQUIRED.join(', ')})`));
        if (seen.has(name)) return fail(corrupt(`duplicate member "${name}"`));
        seen.add(name);

        const limit = SMALL_MEMBERS.get(name);
        if (limit !== undefined) {
          if ((entry.size ?? 0) > limit) return fail(corrupt(`${name} is larger than ${limit / KIB} KiB`));
          const chunks: Buffer[] = [];
          entry.on('data', (chunk: Buffer) => chunks.push(chunk));
          entry.on('end', () => small.set(name, Buffer.concat(chunks)));
          return;
        }
        // The payload: hashed as it streams past, never kept.
        const hash = createHash('sha256');
        let size = 0;
        entry.on('data', (chunk: Buffer) => {
          hash.update(chunk);
          size += chunk.length;
        });
        entry.on('end', () => {
          payload = { size, sha256: hash.digest('hex') };
        });
      });
      this.parser.on('error', (err: Error) => {
        if (err instanceof PackageRejectedError) return fail(err);
        fail(corrupt(this.bytes === 0 ? 'the file is empty' : tarReason(err, seen.size)));
      });
      this.parser.on('end', () => {
        if (this.settled) return;
        if (this.bytes === 0) return fail(corrupt('the file is empty'));
        const missing = REQUIRED.filter((name) => !seen.has(name));
        if (missing.length > 0) {
          return fail(corrupt(seen.size === 0 ? 'the archive holds no members (not a tar archive?)' : `missing member ${missing.join(', ')}`));
        }
        this.settled = true;
        resolve({
          manifestBytes: small.get('manifest.json') ?? Buffer.alloc(0),
          signature: small.get('manifest.sig') ?? Buffer.alloc(0),
          signerPem: small.get('signer.pem') ?? Buffer.alloc(0),
          payload: payload ?? { size: 0, sha256: createHash('sha256').digest('hex') },
        });
      });
    });
    // Whoever feeds the reader may give up on it (a cut download); that is not an unhandled error.
    this.members.catch(() => undefined);
  }

  /** Whether a verdict is in: feeding more bytes changes nothing. */
  get done(): boolean {
    return this.settled;
  }

  write(chunk: Buffer): void {
    if (this.settled) return;
    this.bytes += chunk.length;
    this.parser.write(chunk);
  }

  end(): void {
    if (!this.settled) this.parser.end();
  }

  /** Stops with this error (the bytes could not all be read). */
  abort(err: Error): void {
    this.failWith(err);
  }
}

/** Reads a package file in one streaming pass through a PackageArchiveReader. */
export function readPackageArchive(file: string): Promise<PackageMembers> {
  const reader = new PackageArchiveReader();
  // 1 MiB reads: with 64 KiB ones, per-chunk overhead costs as much as the hashing itself.
  const input = createReadStream(file, { highWaterMark: 1024 * 1024 });
  input.on('data', (chunk) => {
    reader.write(chunk as Buffer);
    if (reader.done) input.destroy();
  });
  input.on('end', () => reader.end());
  input.on('error', (err: NodeJS.ErrnoException) => {
    reader.abort(new ValidationError(`cannot read the package file ${file}: ${err.code ?? err.message}`));
  });
  return reader.members;
}
