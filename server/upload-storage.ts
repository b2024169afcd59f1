import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { Request } from 'express';
import type multer from 'multer';
import { hashingTap } from '../lib/hashing-tap.js';
import type { PackageStore } from './package-store.js';

/** What the upload storage adds to multer's file: the SHA-256 computed while the file streamed. */
export interface HashedUpload extends Express.Multer.File {
  sha256: string;
}

type HandleCallback = (error?: Error | null, info?: Partial<HashedUpload>) => void;

/**
 * A multer storage engine that streams the upload straight to a temporary file of the store
 * (never memory) and hashes it on the way, so the file is read from the network exactly once.
 */
export function hashingStorage(store: PackageStore): multer.StorageEngine {
  return {
    _handleFile(req: Request, file: Express.Multer.File, callback: HandleCallback) {
      const target = store.newTempPath();
      const tap = hashingTap();
      // A client that disconnects mid-upload ends the request without ending the file stream.
      const onAbort = () => file.stream.destroy(new Error('the client disconnected during the upload'));
      req.once('close', () => {
        if (!req.complete) onAbort();
      });
      pipeline(file.stream, tap.stream, createWriteStream(target, { flags: 'wx', mode: 0o600 }))
        .then(() => callback(null, { path: target, ...tap.result() }))
        .catch(async (err: Error) => {
          await rm(target, { force: true });
          callback(err);
        });
    },
    _removeFile(_req: Request, file: Express.Multer.File, callback: (error: Error | null) => void) {
      rm(file.path, { force: true }).then(() => callback(null), callback);
    },
  };
}
