import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { ArchiveDecoder, DecodeError } from './archive-decoder.js';
import { corrupt, PackageMismatchError, PackageRejectedError, ValidationError } from './errors.js';
import { PAYLOAD_MEMBER } from './manifest.js';
import { TarTokenizer, type TarEntry, type TarEvent } from './tar-stream.js';
import { quote } from './text.js';

/** The four members of a format 1 package; the payload is only measured, never held. */
export interface PackageMembers {
  manifestBytes: Buffer;
  /** SHA-256 of the exact bytes of manifest.json, hex. */
  manifestSha256: string;
  signature: Buffer;
  signerPem: Buffer;
  payload: { size: number; sha256: string };
}

/** What the reader's caller already knows about the package it expects. */
export interface ArchiveExpectation {
  /** The manifest.json announced for this package: another one stops the reading at once. */
  manifestSha256?: string;
}

const KIB = 1024;
const SMALL_MEMBERS = new Map<string, number>([
  ['manifest.json', 64 * KIB],
  ['manifest.sig', 1 * KIB],
  ['signer.pem', 64 * KIB],
]);
const REQUIRED = ['manifest.json', 'manifest.sig', 'signer.pem', PAYLOAD_MEMBER];
const REGULAR_FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);
// The payload is gzip already, so a gzipped container hardly shrinks; far more is a gzip bomb.
const CONTAINER_MAX_RATIO = 100;

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

/**
 * The reason for a tar or gzip problem, worded for what was read so far: before any member, the
 * file is no archive at all.
 */
export function archiveReason(err: Error, headersSeen: number): string {
  if (err instanceof DecodeError && err.message.startsWith('bad gzip data')) return `the archive is unreadable (${err.message})`;
  if (err.message === 'checksum failure') {
    return headersSeen === 0 ? 'the file is not a tar or tar.gz archive (checksum failure)' : 'the archive is unreadable (checksum failure)';
  }
  if (headersSeen === 0 && err.message.startsWith('the archive is cut short')) return 'the file is not a tar or tar.gz archive (it is shorter than a tar header)';
  return err.message;
}

/**
 * Parses a package container from bytes written to it in order (plain or gzipped tar, detected by
 * magic bytes), enforcing the container rules of format 1, step 1. `members` settles after end(),
 * or as soon as a byte breaks a rule: a plain archive whose first header is wrong is refused
 * within write() itself, so a download can stop at the first bad block. Fed by a file
 * (readPackageArchive) or by a download as it arrives, so an agent reads a package once.
 */
export class PackageArchiveReader {
  readonly members: Promise<PackageMembers>;
  private readonly tar = new TarTokenizer();
  private readonly decoder = new ArchiveDecoder((chunk) => this.events(this.tar.write(chunk)), { maxRatio: CONTAINER_MAX_RATIO });
  private bytes = 0;
  private settled = false;
  private last: Promise<void> = Promise.resolve();
  private readonly seen = new Set<string>();
  private readonly small = new Map<string, Buffer>();
  private collecting: Buffer[] = [];
  private current: string | null = null;
  private payloadHash: Hash | null = null;
  private payloadSize = 0;
  private payload: { size: number; sha256: string } | undefined;
  private manifestSha256 = '';
  private resolve: (members: PackageMembers) => void = () => undefined;
  private reject: (err: Error) => void = () => undefined;

  constructor(private readonly expect: ArchiveExpectation = {}) {
    this.members = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // Whoever feeds the reader may give up on it (a cut download); that is not an unhandled error.
    this.members.catch(() => undefined);
  }

  /** Whether a verdict is in: feeding more bytes changes nothing. */
  get done(): boolean {
    return this.settled;
  }

  /**
   * Reads the next bytes. Returns false when they are still being decoded (a gzipped container):
   * a caller that can wait awaits drained() before writing more, so memory stays flat.
   */
  write(chunk: Buffer): boolean {
    if (this.settled) return true;
    this.bytes += chunk.length;
    try {
      const pending = this.decoder.write(chunk);
      if (!pending) return true;
      this.last = pending.catch((err: Error) => this.fail(err));
      return false;
    } catch (err) {
      this.fail(err as Error);
      return true;
    }
  }

  /** Resolves once every byte written so far is decoded. */
  drained(): Promise<void> {
    return this.last;
  }

  end(): void {
    if (this.settled) return;
    try {
      const pending = this.decoder.end();
      if (pending) pending.then(() => this.finish(), (err: Error) => this.fail(err));
      else this.finish();
    } catch (err) {
      this.fail(err as Error);
    }
  }

  /** Stops with this error (the bytes could not all be read). */
  abort(err: Error): void {
    this.fail(err);
  }

  private fail(err: Error): void {
    if (this.settled) return;
    this.settled = true;
    this.decoder.abort(err);
    const known = err instanceof PackageRejectedError || err instanceof PackageMismatchError || err instanceof ValidationError;
    this.reject(known ? err : corrupt(archiveReason(err, this.tar.headers)));
  }

  private finish(): void {
    if (this.settled) return;
    this.events(this.tar.end());
    if (this.settled) return;
    if (this.bytes === 0) return this.fail(corrupt('the file is empty'));
    const missing = REQUIRED.filter((name) => !this.seen.has(name));
    if (missing.length > 0) {
      return this.fail(corrupt(this.seen.size === 0 ? 'the archive holds no members (not a tar archive?)' : `missing member ${missing.join(', ')}`));
    }
    this.settled = true;
    this.resolve({
      manifestBytes: this.small.get('manifest.json') ?? Buffer.alloc(0),
      manifestSha256: this.manifestSha256,
      signature: this.small.get('manifest.sig') ?? Buffer.alloc(0),
      signerPem: this.small.get('signer.pem') ?? Buffer.alloc(0),
      payload: this.payload ?? { size: 0, sha256: createHash('sha256').digest('hex') },
    });
  }

  /** Applies the container rules to what the tokenizer read; stops at the first violation. */
  private events(events: TarEvent[]): void {
    for (const event of events) {
      if (this.settled) return;
      switch (event.kind) {
        case 'entry':
          this.entry(event.entry);
          break;
        case 'data':
          if (this.payloadHash) {
            this.payloadHash.update(event.chunk);
            this.payloadSize += event.chunk.length;
          } else {
            this.collecting.push(Buffer.from(event.chunk));
          }
          break;
        case 'entryEnd':
          this.entryEnd();
          break;
        case 'error':
          this.fail(new Error(event.reason));
          break;
      }
    }
  }

  private entry(entry: TarEntry): void {
    const raw = entry.path;
    const unsafe = unsafeNameReason(raw);
    if (unsafe) return this.fail(corrupt(`member ${quote(raw)} ${unsafe}`));
    if (!REGULAR_FILE_TYPES.has(entry.type)) return this.fail(corrupt(`member ${quote(raw)} ${describeType(entry.type)}`));
    const name = memberName(raw);
    if (!REQUIRED.includes(name)) return this.fail(corrupt(`unexpected member ${quote(raw)} (a package holds only ${REQUIRED.join(', ')})`));
    if (this.seen.has(name)) return this.fail(corrupt(`duplicate member ${quote(name)}`));
    this.seen.add(name);
    const limit = SMALL_MEMBERS.get(name);
    if (limit !== undefined && entry.size > limit) return this.fail(corrupt(`${name} is larger than ${limit / KIB} KiB`));
    this.current = name;
    this.collecting = [];
    // The payload is hashed as it streams past, never kept.
    this.payloadHash = name === PAYLOAD_MEMBER ? createHash('sha256') : null;
    this.payloadSize = 0;
  }

  private entryEnd(): void {
    const name = this.current;
    this.current = null;
    if (this.payloadHash) {
      this.payload = { size: this.payloadSize, sha256: this.payloadHash.digest('hex') };
      this.payloadHash = null;
      return;
    }
    if (name === null) return;
    const bytes = Buffer.concat(this.collecting);
    this.collecting = [];
    this.small.set(name, bytes);
    if (name !== 'manifest.json') return;
    this.manifestSha256 = createHash('sha256').update(bytes).digest('hex');
    if (this.expect.manifestSha256 !== undefined && this.expect.manifestSha256 !== this.manifestSha256) {
      this.fail(new PackageMismatchError('the package the master served is not the one it announced (another manifest)'));
    }
  }
}

/** Reads a package file in one streaming pass through a PackageArchiveReader. */
export async function readPackageArchive(file: string): Promise<PackageMembers> {
  const reader = new PackageArchiveReader();
  // 1 MiB reads: with 64 KiB ones, per-chunk overhead costs as much as the hashing itself.
  const input = createReadStream(file, { highWaterMark: 1024 * 1024 });
  try {
    for await (const chunk of input) {
      if (!reader.write(chunk as Buffer)) await reader.drained();
      if (reader.done) break;
    }
    reader.end();
  } catch (err) {
    reader.abort(new ValidationError(`cannot read the package file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`));
  }
  return reader.members;
}
