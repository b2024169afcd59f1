import { statfs } from 'node:fs/promises';
import type { Request, Response } from 'express';
import { InsufficientStorageError, PayloadTooLargeError, TooManyRequestsError } from '../errors.js';
import type { PackageStore } from '../package-store.js';
import { formatBytes } from './presenters.js';

/** What a client refused for too many uploads is told to wait, in seconds. */
const RETRY_AFTER_S = 10;
/** The form around the file can add this much at most (10 fields of 64 KiB, part headers). */
const FORM_OVERHEAD = 1024 * 1024;
/** Kept free on the store's disk: 1 % of it, at most 64 MiB (the database and logs need room too). */
const RESERVE_SHARE = 0.01;
const RESERVE_MAX = 64 * 1024 * 1024;

export interface UploadGateOptions {
  maxBytes: number;
  maxParallel: number;
}

/** Bytes a new upload may fill in the store's folder. */
export async function usableSpace(dir: string): Promise<number> {
  const fs = await statfs(dir);
  const reserve = Math.min(RESERVE_MAX, Math.floor(fs.blocks * fs.bsize * RESERVE_SHARE));
  return Math.max(0, fs.bavail * fs.bsize - reserve);
}

/**
 * Decides, before an upload's body is read, whether to take it: at most `maxParallel` at once,
 * and, when the client declares its size, only what the limit and the store's disk can hold.
 */
export class UploadGate {
  private inProgress = 0;

  constructor(private readonly store: PackageStore, private readonly options: UploadGateOptions) {}

  /** Admits the upload or throws (429, 413, 507); it counts as in progress until its answer is sent. */
  async admit(req: Request, res: Response): Promise<void> {
    const { maxBytes, maxParallel } = this.options;
    if (this.inProgress >= maxParallel) {
      const already = maxParallel === 1 ? '1 upload is' : `${maxParallel} uploads are`;
      throw Object.assign(new TooManyRequestsError(`${already} in progress already; try again when one has finished`), { retryAfter: RETRY_AFTER_S });
    }
    this.inProgress++;
    let counted = true;
    const release = () => {
      if (counted) this.inProgress--;
      counted = false;
    };
    res.once('close', release);
    try {
      const declared = Number(req.get('content-length'));
      if (Number.isSafeInteger(declared) && declared > 0) {
        if (declared > maxBytes + FORM_OVERHEAD) throw new PayloadTooLargeError(`The package is larger than the upload limit of ${formatBytes(maxBytes)}`);
        const free = await usableSpace(this.store.tmpDir);
        if (declared > free) throw new InsufficientStorageError(`The master has not enough free disk for this package: it needs ${formatBytes(declared)}, ${formatBytes(free)} is free`);
      }
    } catch (err) {
      release();
      throw err;
    }
  }
}
