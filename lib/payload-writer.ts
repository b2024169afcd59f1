import { link, lstat, mkdir, open, realpath, symlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { corrupt } from './errors.js';
import { archiveReason, memberName, unsafeNameReason } from './package-archive.js';
import { TarTokenizer, type TarEntry, type TarEvent } from './tar-stream.js';
import { escapeControl, quote } from './text.js';

export interface ExtractResult {
  files: number;
  directories: number;
  links: number;
  bytes: number;
}

/** How far a payload may go: bytes of regular files, and entries (each one an inode). */
export interface WriteLimits {
  maxBytes: number;
  /** Why maxBytes is what it is, for the message: "(its declared unpackedSize)". */
  basis: string;
  maxEntries: number;
}

interface PendingLink {
  name: string;
  dest: string;
  target: string;
}

const FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);

function isInside(root: string, candidate: string): boolean {
  const rel = path.relative(root, candidate);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The name a payload entry writes to, relative to the release directory; '' for the root itself. */
function relativeName(raw: string): string {
  return path.posix.normalize(memberName(raw)).replace(/\/+$/, '').replace(/^\.$/, '');
}

/**
 * Follows a symbolic link's target one component at a time, as the kernel would, and tells
 * whether it stays inside root. A lexical check alone is not enough: a target such as
 * "s/../../x" climbs out when "s" is itself a link pointing somewhere deeper.
 */
async function staysInside(rootReal: string, linkDir: string, target: string): Promise<boolean> {
  let current = await realpath(linkDir);
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      current = path.dirname(current);
      if (!isInside(rootReal, current)) return false;
      continue;
    }
    const next = path.join(current, part);
    const info = await lstat(next).catch(() => null);
    if (!info) return true; // dangling from here on: the kernel cannot resolve further either
    if (info.isSymbolicLink()) {
      const resolved = await realpath(next).catch(() => null);
      if (!resolved || !isInside(rootReal, resolved)) return false;
      current = resolved;
    } else {
      current = next;
    }
  }
  return isInside(rootReal, current);
}

/**
 * Writes the payload's tar into the release directory as it is read: each entry is checked
 * before anything is written for it, files are written one chunk at a time (the caller waits, so
 * memory does not grow with the payload), and the limits hold at every step.
 */
export class PayloadWriter {
  readonly result: ExtractResult = { files: 0, directories: 0, links: 0, bytes: 0 };
  private readonly tar = new TarTokenizer();
  private readonly symlinks: PendingLink[] = [];
  private readonly hardlinks: PendingLink[] = [];
  private entries = 0;
  private file: { handle: FileHandle; name: string } | null = null;

  constructor(private readonly root: string, private readonly limits: WriteLimits) {}

  /** The next bytes of the payload's (uncompressed) tar. */
  write(chunk: Buffer): Promise<void> {
    return this.events(this.tar.write(chunk));
  }

  /** The payload's tar is complete. */
  end(): Promise<void> {
    return this.events(this.tar.end());
  }

  /** Closes the file being written, after a failure elsewhere. */
  async abort(): Promise<void> {
    await this.file?.handle.close().catch(() => undefined);
    this.file = null;
  }

  private async events(events: TarEvent[]): Promise<void> {
    for (const event of events) {
      switch (event.kind) {
        case 'entry':
          await this.entry(event.entry);
          break;
        case 'data':
          await this.data(event.chunk);
          break;
        case 'entryEnd':
          await this.entryEnd();
          break;
        case 'error':
          throw corrupt(`payload: ${archiveReason(new Error(event.reason), this.tar.headers)}`);
      }
    }
  }

  private tooLarge(): Error {
    return corrupt(`the payload unpacks to more than ${this.limits.maxBytes} bytes${this.limits.basis}`);
  }

  /** Rejects an entry before anything is written for it. */
  private check(entry: TarEntry): string | null {
    const unsafe = unsafeNameReason(entry.path);
    if (unsafe) return unsafe;
    if (entry.type === 'SymbolicLink') {
      const target = entry.linkpath ?? '';
      if (target === '' || target.startsWith('/')) return `is a link to an absolute path (${escapeControl(target) || 'empty'})`;
      const resolved = path.resolve(this.root, path.dirname(relativeName(entry.path)), target);
      if (!isInside(this.root, resolved)) return `is a link pointing outside the release directory (${escapeControl(target)})`;
      return null;
    }
    if (entry.type === 'Link') return unsafeNameReason(entry.linkpath ?? '') ? `is a hard link to an unsafe name (${escapeControl(entry.linkpath ?? '')})` : null;
    if (entry.type === 'Directory' || FILE_TYPES.has(entry.type)) return null;
    return `is a ${entry.type === 'CharacterDevice' || entry.type === 'BlockDevice' ? 'device' : `special file (${entry.type})`}`;
  }

  private async entry(entry: TarEntry): Promise<void> {
    if (++this.entries > this.limits.maxEntries) throw corrupt(`the payload holds more than ${this.limits.maxEntries} entries`);
    const reason = this.check(entry);
    if (reason) throw corrupt(`payload member ${quote(entry.path)} ${reason}`);
    const name = relativeName(entry.path);
    const dest = path.join(this.root, name);
    if (entry.type === 'Directory') {
      if (name !== '') await mkdir(dest, { recursive: true, mode: ((entry.mode ?? 0o755) & 0o777) | 0o700 });
      this.result.directories++;
      return;
    }
    if (name === '') throw corrupt(`payload member ${quote(entry.path)} has no name`);
    if (entry.type === 'SymbolicLink' || entry.type === 'Link') {
      const list = entry.type === 'SymbolicLink' ? this.symlinks : this.hardlinks;
      list.push({ name, dest, target: entry.linkpath ?? '' });
      return;
    }
    // The header says how much is coming: a file that would pass the limit is never started.
    if (this.result.bytes + entry.size > this.limits.maxBytes) throw this.tooLarge();
    await mkdir(path.dirname(dest), { recursive: true });
    // 'wx' (O_EXCL) refuses an existing name, so a duplicate member cannot overwrite a file;
    // the mask drops setuid/setgid bits a package has no business setting.
    const handle = await open(dest, 'wx', (entry.mode ?? 0o644) & 0o777).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'EEXIST' ? corrupt(`payload member ${quote(name)} appears twice`) : err;
    });
    this.file = { handle, name };
  }

  private async data(chunk: Buffer): Promise<void> {
    const file = this.file;
    if (!file) return;
    // Counted as written too, not only trusted from the header.
    this.result.bytes += chunk.length;
    if (this.result.bytes > this.limits.maxBytes) throw this.tooLarge();
    for (let at = 0; at < chunk.length;) {
      const { bytesWritten } = await file.handle.write(chunk, at, chunk.length - at);
      at += bytesWritten;
    }
  }

  private async entryEnd(): Promise<void> {
    const file = this.file;
    if (!file) return;
    this.file = null;
    await file.handle.close();
    this.result.files++;
  }

  /** Links last, so no file is ever written through one. */
  async finish(): Promise<void> {
    for (const hard of this.hardlinks) {
      const source = path.join(this.root, relativeName(hard.target));
      const info = await lstat(source).catch(() => null);
      if (!info?.isFile()) throw corrupt(`payload member ${quote(hard.name)} is a hard link to ${quote(hard.target)}, which is not a file of the payload`);
      await link(source, hard.dest);
      this.result.links++;
    }
    for (const soft of this.symlinks) {
      await mkdir(path.dirname(soft.dest), { recursive: true });
      await symlink(soft.target, soft.dest).catch((err: NodeJS.ErrnoException) => {
        throw err.code === 'EEXIST' ? corrupt(`payload member ${quote(soft.name)} appears twice`) : err;
      });
      this.result.links++;
    }
    const rootReal = await realpath(this.root);
    for (const soft of this.symlinks) {
      if (!(await staysInside(rootReal, path.dirname(soft.dest), soft.target))) {
        throw corrupt(`payload member ${quote(soft.name)} is a link pointing outside the release directory (${escapeControl(soft.target)})`);
      }
    }
  }
}
