import type { Request, Response } from 'express';
import multer from 'multer';
import { ValidationError } from '../../lib/errors.js';
import { BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError } from '../errors.js';
import type { PackageStore } from '../package-store.js';
import type { UploadedFile } from '../services/package-service.js';
import { hashingStorage, type HashedUpload } from '../upload-storage.js';
import { formatBytes } from './presenters.js';
import { packageNameSchema } from './schemas.js';
import { parse } from './validation.js';

export const UPLOAD_FIELD = 'package';

export type UploadReceiver = (req: Request, res: Response) => Promise<{ file: UploadedFile; name: string }>;

function uploadError(err: unknown, maxBytes: number): Error {
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
  const message = err instanceof Error ? err.message : String(err);
  if (/unexpected end of form|disconnected|aborted/i.test(message)) return new BadRequestError('The upload is incomplete (the form ended early); send it again');
  return new BadRequestError(`The upload form is malformed (${message})`);
}

/**
 * Receives "package" (file) and "name" (text) from a multipart form: the file streams to a temp
 * file of the store (multer with a hashing disk storage, never memory), within the size limit.
 */
export function uploadReceiver(store: PackageStore, maxBytes: number): UploadReceiver {
  const upload = multer({
    storage: hashingStorage(store),
    limits: { fileSize: maxBytes, files: 1, fields: 10, fieldSize: 64 * 1024, parts: 20 },
  }).single(UPLOAD_FIELD);

  return async (req, res) => {
    if (!req.is('multipart/form-data')) {
      throw new UnsupportedMediaTypeError(`Send the package as multipart/form-data, with the file in the field "${UPLOAD_FIELD}" and its name in the field "name"`);
    }
    await new Promise<void>((resolve, reject) => {
      upload(req, res, (err?: unknown) => (err ? reject(uploadError(err, maxBytes)) : resolve()));
    });
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
