import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { Request } from 'express';
import type multer from 'multer';
import { hashingTap } from '../lib/hashing-tap.js';
import { storageError } from './errors.js';
import type { PropagatorError } from '../lib/errors.js';
import type { PackageStore } from './package-store.js';

/** What the upload storage adds to multer's file: the SHA-256 computed while the file streamed. */
export interface HashedUpload extends Express.Multer.File {
  sha256: string;
}

type HandleCallback = (error?: Error | null, info?: Partial<HashedUpload>) => void;

/**
 * One upload's link between its receiver and the storage engine. Multer reports a storage error
 * only once the client has sent its whole body; through this the receiver hears of a full or
 * read-only disk at once, and can stop the file (a stalled client) and know when its temporary
 * file is gone.
 */
export class UploadWatch {
  private readonly controller = new AbortController();
  private writing: Promise<unknown> = Promise.resolve();

  constructor(readonly onDiskFailure: (err: PropagatorError) => void) {}

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  track(write: Promise<unknown>): void {
    this.writing = write.catch(() => undefined);
  }

  /** Stops the file being written, if any; resolves once its temporary file is removed. */
  async stop(reason: Error): Promise<void> {
    this.controller.abort(reason);
    await this.writing;
  }
}

/**
 * A multer storage engine that streams the upload straight to a temporary file of the store
 * (never memory) and hashes it on the way, so the file is read from the network exactly once.
 */
export function hashingStorage(store: PackageStore, watchOf: (req: Request) => UploadWatch | undefined = () => undefined): multer.StorageEngine {
  return {
    _handleFile(req: Request, file: Express.Multer.File, callback: HandleCallback) {
      const target = store.newTempPath();
      const tap = hashingTap();
      const watch = watchOf(req);
      // A client that disconnects mid-upload ends the request without ending the file stream.
      const onAbort = () => file.stream.destroy(new Error('the client disconnected during the upload'));
      req.once('close', () => {
        if (!req.complete) onAbort();
      });
      const onStop = () => file.stream.destroy(watch?.signal.reason as Error);
      if (watch?.signal.aborted) onStop();
      watch?.signal.addEventListener('abort', onStop, { once: true });
      const write = pipeline(file.stream, tap.stream, createWriteStream(target, { flags: 'wx', mode: 0o600 }))
        .then(() => callback(null, { path: target, ...tap.result() }))
        .catch(async (err: Error) => {
          // On a read-only disk the removal fails too: the file goes at the next start (clearTemp).
          await rm(target, { force: true }).catch(() => undefined);
          const disk = storageError(err);
          if (disk) watch?.onDiskFailure(disk);
          callback(disk ?? err);
        })
        .finally(() => watch?.signal.removeEventListener('abort', onStop));
      watch?.track(write);
    },
    _removeFile(_req: Request, file: Express.Multer.File, callback: (error: Error | null) => void) {
      rm(file.path, { force: true }).then(() => callback(null), callback);
    },
  };
}
