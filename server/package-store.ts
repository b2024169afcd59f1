import { randomUUID } from 'node:crypto';
import { createReadStream, constants } from 'node:fs';
import { access, chmod, copyFile, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';

const SHA256_FILE = /^([0-9a-f]{64})\.pkg$/;

/** fsync(2) of a file or a folder: its data, or its entries, are on the disk when this resolves. */
async function syncPath(file: string): Promise<void> {
  const handle = await open(file, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Package files on disk: <store>/<sha256>.pkg, and data/tmp/ for uploads in progress. The store
 * is DATA/packages by default (one rename from tmp makes a package stored), or a folder shared by
 * several masters (--store, e.g. an NFS mount): content-addressed, so two masters never store one
 * package twice, and a file appears there only whole (copied under a temporary name, then renamed).
 */
export class PackageStore {
  readonly tmpDir: string;
  readonly packagesDir: string;
  /** Other masters may write here: files no row names may be theirs, in the middle of being stored. */
  readonly shared: boolean;

  constructor(readonly dataDir: string, storeDir: string | null = null) {
    this.tmpDir = path.join(dataDir, 'tmp');
    this.packagesDir = storeDir ?? path.join(dataDir, 'packages');
    this.shared = storeDir !== null;
  }

  /** The data folder and its store, owner-only whatever mode they had (mkdir does not change an existing folder). */
  async init(): Promise<void> {
    for (const dir of [this.dataDir, this.tmpDir, this.packagesDir]) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await chmod(dir, 0o700);
    }
  }

  newTempPath(): string {
    return path.join(this.tmpDir, `upload-${randomUUID()}.part`);
  }

  pathFor(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`not a sha256: ${sha256}`);
    return path.join(this.packagesDir, `${sha256}.pkg`);
  }

  /**
   * Moves a received file into the store, durably: once this resolves, the file and its name
   * survive a power cut (its bytes are fsynced before the rename, the folder's entry after it),
   * so a package the master acknowledged is never a row without its file.
   */
  async commit(tempPath: string, sha256: string): Promise<string> {
    const final = this.pathFor(sha256);
    await syncPath(tempPath);
    try {
      await rename(tempPath, final);
    } catch (err) {
      // A store on another file system (a shared mount): copied beside its final name, then renamed.
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
      const incoming = path.join(this.packagesDir, `.incoming-${randomUUID()}`);
      try {
        await copyFile(tempPath, incoming);
        await syncPath(incoming);
        await rename(incoming, final);
      } catch (copyError) {
        await rm(incoming, { force: true }).catch(() => undefined);
        throw copyError;
      }
    }
    await syncPath(this.packagesDir);
    return final;
  }

  /** How long ago the package's file was last written; null when it is not there. */
  async ageMs(sha256: string, now = Date.now()): Promise<number | null> {
    return stat(this.pathFor(sha256)).then((s) => now - s.mtimeMs, () => null);
  }

  async remove(sha256: string): Promise<void> {
    await rm(this.pathFor(sha256), { force: true });
  }

  async discard(tempPath: string): Promise<void> {
    await rm(tempPath, { force: true });
  }

  async exists(sha256: string): Promise<boolean> {
    return access(this.pathFor(sha256)).then(() => true, () => false);
  }

  openRead(sha256: string, range?: { start: number; end?: number }) {
    return createReadStream(this.pathFor(sha256), range);
  }

  async storedSha256(): Promise<string[]> {
    return (await readdir(this.packagesDir)).flatMap((f) => SHA256_FILE.exec(f)?.[1] ?? []);
  }

  /** Uploads cut short by a crash or a disconnect leave files here; none survives a restart. */
  async clearTemp(): Promise<number> {
    const files = await readdir(this.tmpDir);
    await Promise.all(files.map((f) => rm(path.join(this.tmpDir, f), { force: true, recursive: true })));
    return files.length;
  }

  async tempFiles(): Promise<string[]> {
    return readdir(this.tmpDir);
  }

  /**
   * Proves the store's disk takes writes now: a small file written, fsynced and removed (checking
   * permissions says nothing of a disk that turned read-only or full). Throws the disk's error.
   */
  async probeWrite(): Promise<void> {
    await access(this.packagesDir, constants.R_OK | constants.W_OK);
    const probe = path.join(this.tmpDir, `health-${randomUUID()}.probe`);
    const handle = await open(probe, 'wx', 0o600);
    try {
      await handle.writeFile('propagator health check\n');
      await handle.sync();
    } finally {
      await handle.close().catch(() => undefined);
      // On a disk that went read-only the file may stay: clearTemp() removes it at the next start.
      await rm(probe, { force: true }).catch(() => undefined);
    }
  }
}
