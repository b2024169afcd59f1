import { Header, Pax, type HeaderData } from 'tar';
import { quote } from './text.js';

/** One member of a tar archive, with pax and GNU long names already applied. */
export interface TarEntry {
  /** The name as stored; node-tar's type names ("File", "Directory", "SymbolicLink"...). */
  path: string;
  type: string;
  size: number;
  mode: number | undefined;
  linkpath: string | undefined;
}

/** What a chunk of tar bytes held, in order; `error` is always last. */
export type TarEvent =
  | { kind: 'entry'; entry: TarEntry }
  | { kind: 'data'; chunk: Buffer }
  | { kind: 'entryEnd' }
  | { kind: 'error'; reason: string };

const BLOCK = 512;
// Extension headers (pax records, GNU long names) are parsed whole; real ones are a few hundred bytes.
const MAX_META = 64 * 1024;
// A member has at most a pax header, a global one and GNU long name and link name before it.
const MAX_META_IN_A_ROW = 8;
const META_TYPES = new Set(['ExtendedHeader', 'OldExtendedHeader', 'GlobalExtendedHeader', 'NextFileHasLongPath', 'OldGnuLongPath', 'NextFileHasLongLinkpath']);
const DATA_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);
const ZEROS = Buffer.alloc(64 * 1024);

/** Whether every byte is 0; memcmp against a zero page, so a long run costs no allocation. */
export function allZero(bytes: Buffer): boolean {
  for (let at = 0; at < bytes.length; at += ZEROS.length) {
    const piece = bytes.subarray(at, at + ZEROS.length);
    if (!piece.equals(ZEROS.subarray(0, piece.length))) return false;
  }
  return true;
}

/**
 * A strict tar tokenizer: bytes in, entries and their data out, in constant memory. Written on
 * node-tar's Header and Pax (the same decoding as its Parser) because the Parser cannot enforce
 * what format 1 needs: it stops reading at the end-of-archive marker and buffers whatever
 * follows (a member hidden there, which GNU tar -i or python would see, at quadratic cost), skips
 * entries of types it does not know, and reads on past a lone zero block, where GNU tar and
 * python stop. Here the first zero block ends the archive and only zeros may follow it.
 */
export class TarTokenizer {
  private state: 'header' | 'body' | 'meta' | 'padding' | 'trailer' | 'failed' = 'header';
  private readonly block = Buffer.alloc(BLOCK);
  private blockFill = 0;
  private remain = 0;
  private padding = 0;
  private current: TarEntry | null = null;
  private metaType = '';
  private meta: Buffer[] = [];
  private metaInARow = 0;
  private ex: HeaderData | undefined;
  private gex: HeaderData | undefined;
  /** Entries and extension headers read so far (none: the bytes may be no tar at all). */
  headers = 0;

  write(chunk: Buffer): TarEvent[] {
    const events: TarEvent[] = [];
    try {
      this.consume(chunk, events);
    } catch (err) {
      this.state = 'failed';
      // node-tar's header decoder speaks of its internals ("invalid base256 encoding"): say what it means.
      events.push({ kind: 'error', reason: err instanceof TarFormatError ? err.message : `a tar header holds a number that cannot be read (${errorText(err)})` });
    }
    return events;
  }

  /** The archive is complete: anything still expected makes it cut short. */
  end(): TarEvent[] {
    if (this.state === 'failed') return [];
    if (this.state === 'body' || this.state === 'meta' || this.state === 'padding') {
      const name = this.current ? quote(this.current.path) : 'an extended header';
      this.state = 'failed';
      return [{ kind: 'error', reason: `the archive is cut short (${name} lacks ${this.remain + this.padding} bytes)` }];
    }
    if (this.state === 'header' && this.blockFill > 0 && !allZero(this.block.subarray(0, this.blockFill))) {
      this.state = 'failed';
      return [{ kind: 'error', reason: 'the archive is cut short (it ends inside a header)' }];
    }
    return [];
  }

  private consume(chunk: Buffer, events: TarEvent[]): void {
    let at = 0;
    while (at < chunk.length) {
      switch (this.state) {
        case 'failed':
          return;
        case 'trailer':
          if (!allZero(chunk.subarray(at))) throw new TarFormatError('data after the end of the archive');
          return;
        case 'padding': {
          const n = Math.min(this.padding, chunk.length - at);
          this.padding -= n;
          at += n;
          if (this.padding === 0) this.state = 'header';
          break;
        }
        case 'body':
        case 'meta': {
          const n = Math.min(this.remain, chunk.length - at);
          const piece = chunk.subarray(at, at + n);
          if (this.state === 'body') events.push({ kind: 'data', chunk: piece });
          else this.meta.push(Buffer.from(piece));
          this.remain -= n;
          at += n;
          if (this.remain === 0) this.finishEntry(events);
          break;
        }
        case 'header': {
          if (this.blockFill === 0 && chunk.length - at >= BLOCK) {
            this.header(chunk.subarray(at, at + BLOCK), events);
            at += BLOCK;
            break;
          }
          const n = Math.min(BLOCK - this.blockFill, chunk.length - at);
          chunk.copy(this.block, this.blockFill, at, at + n);
          this.blockFill += n;
          at += n;
          if (this.blockFill === BLOCK) {
            this.blockFill = 0;
            this.header(this.block, events);
          }
          break;
        }
      }
    }
  }

  private header(block: Buffer, events: TarEvent[]): void {
    if (allZero(block)) {
      this.state = 'trailer';
      return;
    }
    const header = new Header(block, 0, this.ex, this.gex);
    if (!header.cksumValid) throw new TarFormatError('checksum failure');
    const size = header.size;
    if (size === undefined || !Number.isSafeInteger(size)) throw new TarFormatError(`invalid size in the header of ${quote(header.path ?? '')}`);
    this.headers++;
    const type = header.type;
    this.padding = (BLOCK - (size % BLOCK)) % BLOCK;
    if (META_TYPES.has(type)) {
      if (size > MAX_META) throw new TarFormatError(`an extended header of ${size} bytes (at most ${MAX_META})`);
      if (++this.metaInARow > MAX_META_IN_A_ROW) throw new TarFormatError(`more than ${MAX_META_IN_A_ROW} extended headers before one member`);
      this.metaType = type;
      this.meta = [];
      this.current = null;
      this.remain = size;
      this.state = 'meta';
      if (size === 0) this.finishEntry(events);
      return;
    }
    this.ex = undefined;
    this.metaInARow = 0;
    this.current = { path: header.path ?? '', type, size, mode: header.mode === undefined ? undefined : header.mode & 0o7777, linkpath: header.linkpath || undefined };
    events.push({ kind: 'entry', entry: this.current });
    // Only files carry data: python's tarfile reads the blocks after a link or a device as the
    // next header whatever its size says, so data there would be a member to one reader only.
    if (size > 0 && !DATA_TYPES.has(type)) {
      throw new TarFormatError(`member ${quote(this.current.path)} (${type}) claims ${size} bytes of data, which only a file may have`);
    }
    this.remain = size;
    this.state = 'body';
    if (size === 0) this.finishEntry(events);
  }

  private finishEntry(events: TarEvent[]): void {
    this.state = this.padding > 0 ? 'padding' : 'header';
    if (this.current) {
      events.push({ kind: 'entryEnd' });
      this.current = null;
      return;
    }
    const text = Buffer.concat(this.meta).toString('utf8');
    this.meta = [];
    switch (this.metaType) {
      case 'GlobalExtendedHeader':
        this.gex = Pax.parse(text, this.gex, true);
        break;
      case 'NextFileHasLongPath':
      case 'OldGnuLongPath':
        this.ex = { ...this.ex, path: text.replace(/\0.*/s, '') };
        break;
      case 'NextFileHasLongLinkpath':
        this.ex = { ...this.ex, linkpath: text.replace(/\0.*/s, '') };
        break;
      default:
        this.ex = Pax.parse(text, this.ex, false);
    }
  }
}

/** The archive breaks a rule of the tar format; the message is the reason. */
export class TarFormatError extends Error {
  override name = 'TarFormatError';
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
