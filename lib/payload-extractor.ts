import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { link, lstat, mkdir, realpath, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { Parser, type ReadEntry } from 'tar';
import { corrupt, PackageRejectedError, ValidationError } from './errors.js';
import { PAYLOAD_MEMBER } from './manifest.js';
import { memberName, tarReason, unsafeNameReason } from './package-archive.js';

export interface ExtractResult {
  files: number;
  directories: number;
  links: number;
  bytes: number;
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

class PayloadWriter {
  readonly result: ExtractResult = { files: 0, directories: 0, links: 0, bytes: 0 };
  private readonly symlinks: PendingLink[] = [];
  private readonly hardlinks: PendingLink[] = [];

  constructor(private readonly root: string) {}

  /** Rejects an entry before anything is written for it. */
  check(entry: ReadEntry): string | null {
    const unsafe = unsafeNameReason(entry.path);
    if (unsafe) return unsafe;
    if (entry.type === 'SymbolicLink') {
      const target = entry.linkpath ?? '';
      if (target === '' || target.startsWith('/')) return `is a link to an absolute path (${target || 'empty'})`;
      const name = relativeName(entry.path);
      const resolved = path.resolve(this.root, path.dirname(name), target);
      if (!isInside(this.root, resolved)) return `is a link pointing outside the release directory (${target})`;
      return null;
    }
    if (entry.type === 'Link') return unsafeNameReason(entry.linkpath ?? '') ? `is a hard link to an unsafe name (${entry.linkpath})` : null;
    if (entry.type === 'Directory' || FILE_TYPES.has(entry.type)) return null;
    return `is a ${entry.type === 'CharacterDevice' || entry.type === 'BlockDevice' ? 'device' : `special file (${entry.type})`}`;
  }

  async write(entry: ReadEntry): Promise<void> {
    const name = relativeName(entry.path);
    const dest = path.join(this.root, name);
    if (entry.type === 'Directory') {
      entry.resume();
      if (name !== '') await mkdir(dest, { recursive: true, mode: ((entry.mode ?? 0o755) & 0o777) | 0o700 });
      this.result.directories++;
      return;
    }
    if (name === '') throw corrupt(`payload member "${entry.path}" has no name`);
    if (entry.type === 'SymbolicLink' || entry.type === 'Link') {
      entry.resume();
      const list = entry.type === 'SymbolicLink' ? this.symlinks : this.hardlinks;
      list.push({ name, dest, target: entry.linkpath ?? '' });
      return;
    }
    await mkdir(path.dirname(dest), { recursive: true });
    // 'wx' (O_EXCL) refuses an existing name, so a duplicate member cannot overwrite a file;
    // the mask drops setuid/setgid bits a package has no business setting.
    const out = createWriteStream(dest, { flags: 'wx', mode: (entry.mode ?? 0o644) & 0o777 });
    await new Promise<void>((resolve, reject) => {
      out.on('error', (err: NodeJS.ErrnoException) => {
        entry.unpipe(out);
        entry.resume();
        reject(err.code === 'EEXIST' ? corrupt(`payload member "${name}" appears twice`) : err);
      });
      out.on('close', resolve);
      entry.pipe(out);
    });
    this.result.bytes += out.bytesWritten;
    this.result.files++;
  }

  /** Links last, so no file is ever written through one. */
  async finish(): Promise<void> {
    for (const hard of this.hardlinks) {
      const source = path.join(this.root, relativeName(hard.target));
      const info = await lstat(source).catch(() => null);
      if (!info?.isFile()) throw corrupt(`payload member "${hard.name}" is a hard link to "${hard.target}", which is not a file of the payload`);
      await link(source, hard.dest);
      this.result.links++;
    }
    for (const soft of this.symlinks) {
      await mkdir(path.dirname(soft.dest), { recursive: true });
      await symlink(soft.target, soft.dest).catch((err: NodeJS.ErrnoException) => {
        throw err.code === 'EEXIST' ? corrupt(`payload member "${soft.name}" appears twice`) : err;
      });
      this.result.links++;
    }
    const rootReal = await realpath(this.root);
    for (const soft of this.symlinks) {
      if (!(await staysInside(rootReal, path.dirname(soft.dest), soft.target))) {
        throw corrupt(`payload member "${soft.name}" is a link pointing outside the release directory (${soft.target})`);
      }
    }
  }
}

/**
 * Extracts the payload of a package into a new release directory, re-hashing it on the way so a
 * file swapped after verification is caught. The directory must not exist yet; on any failure
 * it is removed whole, so no half-written release is left behind.
 */
export async function extractPayload(
  packageFile: string,
  expected: { size: number; sha256: string },
  releaseDir: string,
): Promise<ExtractResult> {
  const root = path.resolve(releaseDir);
  await mkdir(path.dirname(root), { recursive: true });
  try {
    await mkdir(root);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ValidationError(code === 'EEXIST' ? `release directory ${root} already exists` : `cannot create ${root}: ${code}`);
  }
  try {
    const writer = new PayloadWriter(root);
    const measured = await streamPayload(packageFile, writer);
    if (measured.size !== expected.size || measured.sha256 !== expected.sha256) {
      throw corrupt('payload checksum does not match the manifest (the package file changed after it was verified)');
    }
    await writer.finish();
    return writer.result;
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}

function streamPayload(packageFile: string, writer: PayloadWriter): Promise<{ size: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const input = createReadStream(packageFile, { highWaterMark: 1024 * 1024 });
    const outer = new Parser({ strict: true });
    const inner = new Parser({ strict: true });
    const hash = createHash('sha256');
    let size = 0;
    let found = false;
    let innerEntries = 0;
    let queue: Promise<void> = Promise.resolve();
    let failure: Error | undefined;

    const fail = (err: Error) => {
      if (failure) return;
      failure = err;
      input.destroy();
      reject(err);
    };

    outer.on('entry', (entry: ReadEntry) => {
      if (failure || found || memberName(entry.path) !== PAYLOAD_MEMBER) return entry.resume();
      found = true;
      // One consumer for both jobs: a Minipass entry hands buffered data to its first consumer only.
      entry.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        size += chunk.length;
        if (!inner.write(chunk)) entry.pause();
      });
      inner.on('drain', () => entry.resume());
      entry.on('end', () => inner.end());
    });
    outer.on('error', (err: Error) => fail(corrupt(tarReason(err, 1))));
    outer.on('end', () => {
      if (!found) fail(corrupt(`the package has no ${PAYLOAD_MEMBER}`));
    });

    inner.on('entry', (entry: ReadEntry) => {
      innerEntries++;
      if (failure) return entry.resume();
      const reason = writer.check(entry);
      if (reason) {
        entry.resume();
        return fail(corrupt(`payload member "${entry.path}" ${reason}`));
      }
      queue = queue.then(async () => {
        if (failure) entry.resume();
        else await writer.write(entry);
      });
      queue.catch((err: Error) => {
        entry.resume();
        fail(err);
      });
    });
    inner.on('error', (err: Error) => fail(err instanceof PackageRejectedError ? err : corrupt(`payload: ${tarReason(err, innerEntries)}`)));
    inner.on('end', () => {
      queue.then(() => {
        if (failure) return;
        resolve({ size, sha256: hash.digest('hex') });
      }, () => undefined);
    });
    input.on('error', (err: NodeJS.ErrnoException) => fail(new ValidationError(`cannot read the package file ${packageFile}: ${err.code ?? err.message}`)));
    input.pipe(outer);
  });
}
