import { randomUUID } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { access, copyFile, mkdir, open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { SHARED_SAFE_AGE_MS, type CommitOutcome, type PackageSource, type PackageStore, type StoredEntry } from './package-store.js';
import { ownerOnlyFolders, syncPath, TempFolder } from './temp-folder.js';

/** The store's name, given by the database whose packages it holds (store-identity.ts). */
const MARK_FILE = '.propagator-store';

const SHA256_FILE = /^([0-9a-f]{64})\.pkg$/;
/** What a commit or a probe leaves in a shared folder when its master dies mid-way. */
const LEFTOVER_FILE = /^\.(incoming|health)-[0-9a-f-]{36}\.(part|probe)$/;

/**
 * Node cannot sendfile(2) to a socket, so every byte of a package is copied through this process
 * for every agent. 1 MiB reads (express's sendFile reads 64 KiB) cut that per-chunk cost on both
 * ends: with 20 downloads at once on two cores, the clients used ~40 % more CPU receiving from
 * sendFile than from 1 MiB reads, and took ~50 % longer (docs/PERFORMANCE.md).
 */
const READ_SIZE = 1024 * 1024;

export interface FolderStoreOptions {
  /** DATA/packages unless --store names another folder. */
  packagesDir?: string;
  /** A folder other masters use too (a shared mount): see SHARED_SAFE_AGE_MS. */
  shared?: boolean;
}

/**
 * Package files in a folder: <folder>/<sha256>.pkg, and DATA/tmp/ for uploads in progress. With
 * the default folder, DATA/packages, a commit is a rename from DATA/tmp; a folder on another file
 * system (a shared mount) gets a copy, renamed into place there, so a reader never sees half a file.
 */
export class FolderStore implements PackageStore {
  readonly tmpDir: string;
  readonly packagesDir: string;
  readonly shared: boolean;
  readonly description: string;
  private readonly temp: TempFolder;

  constructor(readonly dataDir: string, options: FolderStoreOptions = {}) {
    this.tmpDir = path.join(dataDir, 'tmp');
    this.packagesDir = options.packagesDir ?? path.join(dataDir, 'packages');
    this.shared = options.shared ?? false;
    this.description = `the folder ${this.packagesDir}`;
    this.temp = new TempFolder(this.tmpDir);
  }

  /** The data folder and its store, owner-only whatever mode they had. */
  async init(): Promise<void> {
    if (!this.shared) {
      await ownerOnlyFolders([this.dataDir, this.tmpDir, this.packagesDir]);
      return;
    }
    await ownerOnlyFolders([this.dataDir, this.tmpDir]);
    // A shared mount is set up by its administrator for several masters: made if absent, never chmod'ed.
    await mkdir(this.packagesDir, { recursive: true, mode: 0o700 });
    await this.sweepLeftovers();
  }

  newTempPath(): string {
    return this.temp.newPath();
  }

  pathFor(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`not a sha256: ${sha256}`);
    return path.join(this.packagesDir, `${sha256}.pkg`);
  }

  /**
   * Moves a received file into the store, durably: once this resolves, the file and its name
   * survive a power cut (its bytes are fsynced before the rename, the folder's entry after it),
   * so a package the master acknowledged is never a row without its file. In a shared folder a
   * package another master stored already (same name, same size) is not written again.
   */
  async commit(tempPath: string, sha256: string, size: number): Promise<CommitOutcome> {
    const final = this.pathFor(sha256);
    if (this.shared && (await stat(final).catch(() => null))?.size === size) return 'already-stored';
    await syncPath(tempPath);
    try {
      await rename(tempPath, final);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
      await this.copyIn(tempPath, final);
    }
    await syncPath(this.packagesDir);
    return 'stored';
  }

  /** Across file systems: a copy under a hidden name, synced, then renamed into place. */
  private async copyIn(tempPath: string, final: string): Promise<void> {
    const incoming = path.join(this.packagesDir, `.incoming-${randomUUID()}.part`);
    try {
      await copyFile(tempPath, incoming);
      await syncPath(incoming);
      await rename(incoming, final);
    } catch (err) {
      await rm(incoming, { force: true }).catch(() => undefined);
      throw err;
    }
  }

  async remove(sha256: string): Promise<void> {
    await rm(this.pathFor(sha256), { force: true });
  }

  discard(tempPath: string): Promise<void> {
    return this.temp.discard(tempPath);
  }

  async list(): Promise<StoredEntry[]> {
    const entries: StoredEntry[] = [];
    for (const name of await readdir(this.packagesDir)) {
      const sha256 = SHA256_FILE.exec(name)?.[1];
      if (!sha256) continue;
      const info = await stat(path.join(this.packagesDir, name)).catch(() => null);
      if (info?.isFile()) entries.push({ sha256, size: info.size, modifiedAt: info.mtime });
    }
    return entries;
  }

  async source(sha256: string): Promise<PackageSource | null> {
    const file = this.pathFor(sha256);
    const info = await stat(file).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    if (!info) return null;
    return { size: info.size, open: async (start, end) => createReadStream(file, { start, end, highWaterMark: READ_SIZE }) };
  }

  withLocalCopy<T>(sha256: string, read: (file: string) => Promise<T>): Promise<T> {
    return read(this.pathFor(sha256));
  }

  clearTemp(): Promise<number> {
    return this.temp.clear();
  }

  tempFiles(): Promise<string[]> {
    return this.temp.list();
  }

  /**
   * Proves the store's disk takes writes now: a small file written, fsynced and removed (checking
   * permissions says nothing of a disk that turned read-only or full), in DATA/tmp where uploads
   * land, and in the shared folder too when the store is one. Throws the disk's error.
   */
  async probeWrite(): Promise<void> {
    await access(this.packagesDir, constants.R_OK | constants.W_OK);
    await probeFile(path.join(this.tmpDir, `health-${randomUUID()}.probe`));
    if (this.shared) await probeFile(path.join(this.packagesDir, `.health-${randomUUID()}.probe`));
  }

  async readMark(): Promise<string | null> {
    return (await readFile(path.join(this.packagesDir, MARK_FILE), 'utf8').catch(() => '')).trim() || null;
  }

  async writeMark(id: string): Promise<void> {
    await writeFile(path.join(this.packagesDir, MARK_FILE), `${id}\n`, { flag: 'wx', mode: 0o600 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }

  /** What masters that died mid-commit left in the shared folder, once surely no master is still writing it. */
  private async sweepLeftovers(): Promise<void> {
    const before = Date.now() - SHARED_SAFE_AGE_MS;
    for (const name of await readdir(this.packagesDir)) {
      if (!LEFTOVER_FILE.test(name)) continue;
      const file = path.join(this.packagesDir, name);
      const info = await stat(file).catch(() => null);
      if (info && info.mtimeMs < before) await rm(file, { force: true });
    }
  }
}

async function probeFile(probe: string): Promise<void> {
  const handle = await open(probe, 'wx', 0o600);
  try {
    await handle.writeFile('propagator health check\n');
    await handle.sync();
  } finally {
    await handle.close().catch(() => undefined);
    // On a disk that went read-only the file may stay: clearTemp() (or the shared folder's sweep) removes it at the next start.
    await rm(probe, { force: true }).catch(() => undefined);
  }
}
