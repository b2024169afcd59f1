import type { Readable } from 'node:stream';

/**
 * In a store other masters may share, nothing younger than this is removed at start: another
 * master may be between "stored" and "row valid" (a commit of a large package to a bucket takes
 * minutes), and its row is not in this master's database. An hour is far above any commit.
 */
export const SHARED_SAFE_AGE_MS = 60 * 60_000;

/** One package in the store, as its listing shows it. */
export interface StoredEntry {
  sha256: string;
  size: number;
  modifiedAt: Date;
}

/** 'already-stored': the store held these bytes already (another master stored them): nothing was written. */
export type CommitOutcome = 'stored' | 'already-stored';

/** What a download reads: the package's size, then its bytes from `start` to `end` (inclusive). */
export interface PackageSource {
  size: number;
  open(start: number, end: number): Promise<Readable>;
}

/**
 * Where packages are kept, content-addressed by SHA-256: a folder (DATA/packages, or a mount
 * several masters share) or an S3 bucket. Uploads in progress always stream to `tmpDir` on the
 * master's own disk, where they are verified; commit() then makes them part of the store.
 */
export interface PackageStore {
  /** "the folder /srv/packages", `the S3 bucket "b" at http://…`: for messages, never a secret. */
  readonly description: string;
  /** Other masters may write here too (an S3 bucket, a folder outside the data folder). */
  readonly shared: boolean;
  readonly tmpDir: string;
  /** Makes the folders, and proves the store can be used (a bucket that exists and takes these credentials); throws a ConfigurationError. */
  init(): Promise<void>;
  newTempPath(): string;
  /** Makes a verified temporary file the package `sha256`, durably; once this resolves it is served. */
  commit(tempPath: string, sha256: string, size: number): Promise<CommitOutcome>;
  remove(sha256: string): Promise<void>;
  discard(tempPath: string): Promise<void>;
  list(): Promise<StoredEntry[]>;
  /** The package for a download, or null when the store does not hold it. */
  source(sha256: string): Promise<PackageSource | null>;
  /** A URL that serves the package without credentials for `seconds` (S3 only). */
  presignedUrl?(sha256: string, seconds: number): Promise<string>;
  /** Runs `read` on a local file holding the package (the store's own file, or a temporary copy). */
  withLocalCopy<T>(sha256: string, read: (file: string) => Promise<T>): Promise<T>;
  /** Empties tmpDir (uploads a crash or a disconnect cut short); how many files were there. */
  clearTemp(): Promise<number>;
  tempFiles(): Promise<string[]>;
  /** Proves the store takes writes now; throws why not. */
  probeWrite(): Promise<void>;
  /** Releases what the store holds open (a bucket's connections) when the master stops. */
  close?(): void;
  /** The name a database gave this store (see store-identity.ts); null when it carries none. */
  readMark(): Promise<string | null>;
  /** Writes that name, unless the store carries one already. */
  writeMark(id: string): Promise<void>;
}
