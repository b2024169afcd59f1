import type { Request, Response } from 'express';
import multer from 'multer';
import { PropagatorError, ValidationError } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import { BadRequestError, PayloadTooLargeError, RequestTimeoutError, UnsupportedMediaTypeError, storageError } from '../errors.js';
import type { PackageStore } from '../package-store.js';
import type { UploadedFile } from '../services/package-service.js';
import { hashingStorage, UploadWatch, type HashedUpload } from '../upload-storage.js';
import { formatBytes } from './presenters.js';
import { packageNameSchema } from './schemas.js';
import { closeAfterAnswer, exemptUpload } from './timeouts.js';
import { UploadGate } from './upload-gate.js';
import { parse } from './validation.js';

export const UPLOAD_FIELD = 'package';

export type UploadReceiver = (req: Request, res: Response) => Promise<{ file: UploadedFile; name: string }>;

export interface UploadLimits {
  maxBytes: number;
  maxParallel: number;
  /** No byte received for this long: the upload is stopped (408). */
  idleTimeoutMs: number;
}

function uploadError(err: unknown, maxBytes: number): Error {
  if (err instanceof PropagatorError) return err;
  if (err instanceof multer.MulterError) {
    switch (err.code) {
      case 'LIMIT_FILE_SIZE':
        return new PayloadTooLargeError(`The package is larger than the upload limit of ${formatBytes(maxBytes)}`);
      case 'LIMIT_FIELD_VALUE':
        return new ValidationError('The name must be at most 100 characters');
      case 'LIMIT_UNEXPECTED_FILE':
        return new ValidationError(`Unexpected file field "${err.field ?? ''}": send one package in the field "${UPLOAD_FIELD}"`);
      default:
        return new BadRequestError(`The upload form is not acceptable (${err.message})`);
    }
  }
  // A full or read-only disk is the master's trouble, not a malformed form (507, 503).
  const disk = storageError(err);
  if (disk) return disk;
  const message = err instanceof Error ? err.message : String(err);
  if (/unexpected end of form|disconnected|aborted/i.test(message)) return new BadRequestError('The upload is incomplete (the form ended early); send it again');
  return new BadRequestError(`The upload form is malformed (${message})`);
}

/**
 * Receives "package" (file) and "name" (text) from a multipart form: the file streams to a temp
 * file of the store (multer with a hashing disk storage, never memory), within the size limit.
 * Before the body is read, the gate may refuse it (too many uploads, too large, no disk for it);
 * a client that stalls, or a disk that fills, stops it at once, its temporary file removed.
 */
export function uploadReceiver(store: PackageStore, limits: UploadLimits, log: Logger): UploadReceiver {
  const watches = new WeakMap<Request, UploadWatch>();
  const upload = multer({
    storage: hashingStorage(store, (req) => watches.get(req)),
    limits: { fileSize: limits.maxBytes, files: 1, fields: 10, fieldSize: 64 * 1024, parts: 20 },
  }).single(UPLOAD_FIELD);
  const gate = new UploadGate(store, limits);

  const receive = (req: Request, res: Response) => new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      // Verifying a large package can take longer than the idle timeout, the socket silent.
      req.setTimeout(0);
      if (err) reject(err);
      else resolve();
    };
    // Multer would wait for the client to send its whole body (or forever, if it stalled).
    const stopNow = (err: Error) => {
      if (settled) return;
      void watch.stop(err).then(() => {
        closeAfterAnswer(req, res);
        settle(err);
      });
    };
    const watch = new UploadWatch(stopNow);
    watches.set(req, watch);
    req.setTimeout(limits.idleTimeoutMs, () => {
      if (settled) return;
      const seconds = limits.idleTimeoutMs / 1000;
      log.warn('upload stalled', { path: req.path, user: (res.locals.user as string | undefined) ?? null, seconds });
      stopNow(new RequestTimeoutError(`The upload stalled: no data for ${seconds} s`));
    });
    upload(req, res, (err?: unknown) => settle(err ? uploadError(err, limits.maxBytes) : undefined));
  });

  return async (req, res) => {
    if (!req.is('multipart/form-data')) {
      throw new UnsupportedMediaTypeError(`Send the package as multipart/form-data, with the file in the field "${UPLOAD_FIELD}" and its name in the field "name"`);
    }
    try {
      await gate.admit(req, res);
    } catch (err) {
      closeAfterAnswer(req, res);
      throw err;
    }
    exemptUpload(req);
    await receive(req, res);
    const file = req.file as HashedUpload | undefined;
    const body = req.body as Record<string, unknown> | undefined;
    try {
      if (!file) throw new ValidationError(`Choose a package file to upload (form field "${UPLOAD_FIELD}")`);
      const name = parse(packageNameSchema, body?.name);
      return { file: { tempPath: file.path, size: file.size, sha256: file.sha256 }, name };
    } catch (err) {
      if (file) await store.discard(file.path);
      throw err;
    }
  };
}
