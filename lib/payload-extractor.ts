import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { ArchiveDecoder, DecodeError } from './archive-decoder.js';
import { corrupt, PackageRejectedError, ValidationError } from './errors.js';
import { PAYLOAD_MEMBER } from './manifest.js';
import { archiveReason, memberName } from './package-archive.js';
import { PayloadWriter, type ExtractResult, type WriteLimits } from './payload-writer.js';
import { TarTokenizer } from './tar-stream.js';

export type { ExtractResult } from './payload-writer.js';

/** The payload as the verified manifest describes it. */
export interface ExpectedPayload {
  size: number;
  sha256: string;
  /** The manifest's unpackedSize: the total size of the payload's regular files, when declared. */
  unpackedSize?: number;
}

export interface ExtractLimits {
  /** Without a declared unpackedSize, the payload may unpack to this many times its size. */
  maxRatio?: number;
  /** At most this many payload entries (files, directories, links): each one costs an inode. */
  maxEntries?: number;
}

export const DEFAULT_MAX_UNPACK_RATIO = 10;
export const DEFAULT_MAX_ENTRIES = 100_000;

/** How many bytes of files a payload may unpack to, and why, for the message when it does not. */
export function unpackLimit(payload: ExpectedPayload, maxRatio = DEFAULT_MAX_UNPACK_RATIO): { maxBytes: number; basis: string } {
  if (payload.unpackedSize !== undefined) return { maxBytes: payload.unpackedSize, basis: ' (its declared unpackedSize)' };
  return {
    maxBytes: Math.floor(maxRatio * payload.size),
    basis: `, ${maxRatio} times its compressed size; the manifest declares no unpackedSize`,
  };
}

/**
 * Extracts the payload of a package into a new release directory, re-hashing it on the way so a
 * file swapped after verification is caught. The directory must not exist yet; on any failure
 * (a limit passed, a hostile entry, a checksum) it is removed whole, so no half-written release
 * is left behind. Memory does not grow with the payload: every stage waits for the disk.
 */
export async function extractPayload(
  packageFile: string,
  expected: ExpectedPayload,
  releaseDir: string,
  limits: ExtractLimits = {},
): Promise<ExtractResult> {
  const root = path.resolve(releaseDir);
  await mkdir(path.dirname(root), { recursive: true });
  try {
    await mkdir(root);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ValidationError(code === 'EEXIST' ? `release directory ${root} already exists` : `cannot create ${root}: ${code}`);
  }
  const writeLimits: WriteLimits = { ...unpackLimit(expected, limits.maxRatio), maxEntries: limits.maxEntries ?? DEFAULT_MAX_ENTRIES };
  const writer = new PayloadWriter(root, writeLimits);
  try {
    const measured = await streamPayload(packageFile, writer);
    if (measured.size !== expected.size || measured.sha256 !== expected.sha256) {
      throw corrupt('payload checksum does not match the manifest (the package file changed after it was verified)');
    }
    await writer.finish();
    return writer.result;
  } catch (err) {
    await writer.abort();
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}

/** Reads the container, hashes the payload member and hands its tar to the writer. */
async function streamPayload(packageFile: string, writer: PayloadWriter): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  let found = false;
  let inPayload = false;
  const payload = new ArchiveDecoder((chunk) => writer.write(chunk));
  // Errors of the payload's gzip layer name the payload; the writer's own are already worded.
  const payloadFailure = (err: unknown) => (err instanceof DecodeError ? corrupt(`payload: ${archiveReason(err, 1)}`) : err);
  const outer = new TarTokenizer();
  const outerFailure = (reason: string) => corrupt(archiveReason(new Error(reason), outer.headers));
  const container = new ArchiveDecoder(async (chunk) => {
    for (const event of outer.write(chunk)) {
      if (event.kind === 'error') throw outerFailure(event.reason);
      if (event.kind === 'entry') {
        inPayload = !found && memberName(event.entry.path) === PAYLOAD_MEMBER;
        found ||= inPayload;
      } else if (event.kind === 'entryEnd') {
        inPayload = false;
      } else if (inPayload) {
        hash.update(event.chunk);
        size += event.chunk.length;
        await Promise.resolve(payload.write(event.chunk)).catch((err: unknown) => {
          throw payloadFailure(err);
        });
      }
    }
  });

  const fail = (err: unknown): Error => {
    if (err instanceof PackageRejectedError || err instanceof ValidationError) return err;
    if (err instanceof DecodeError) return corrupt(archiveReason(err, outer.headers));
    return err as Error;
  };
  try {
    const input = createReadStream(packageFile, { highWaterMark: 1024 * 1024 });
    const chunks = input[Symbol.asyncIterator]();
    try {
      for (;;) {
        const next = await chunks.next().catch((err: NodeJS.ErrnoException) => {
          throw new ValidationError(`cannot read the package file ${packageFile}: ${err.code ?? err.message}`);
        });
        if (next.done) break;
        await container.write(next.value as Buffer);
      }
    } finally {
      input.destroy();
    }
    await container.end();
    for (const event of outer.end()) if (event.kind === 'error') throw outerFailure(event.reason);
    if (!found) throw corrupt(`the package has no ${PAYLOAD_MEMBER}`);
    await Promise.resolve(payload.end()).catch((err: unknown) => {
      throw payloadFailure(err);
    });
    await writer.end();
  } catch (err) {
    payload.abort(err as Error);
    container.abort(err as Error);
    throw fail(err);
  }
  return { size, sha256: hash.digest('hex') };
}
