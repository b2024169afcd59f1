import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { ConfigurationError } from '../lib/errors.js';
import { StorageUnavailableError } from './errors.js';
import type { CommitOutcome, PackageSource, PackageStore, StoredEntry } from './package-store.js';
import { bucketText, describeS3Error, isMissing, type S3Place } from './s3-errors.js';
import type { StoreSetting } from './store-setting.js';
import { ownerOnlyFolders, TempFolder } from './temp-folder.js';

export type S3Setting = Extract<StoreSetting, { kind: 's3' }>;

const KEY = /([0-9a-f]{64})\.pkg$/;
/** Parts uploaded at once (lib-storage's queue): with the part size, the memory one upload holds. */
const PARTS_IN_FLIGHT = 4;

export interface S3StoreOptions {
  /**
   * A bucket connection silent this long fails. Above the send idle timeout: while an agent reads
   * slowly, the master reads the bucket as slowly, and the agent's own limit must cut it first.
   */
  socketTimeoutMs: number;
}

/**
 * Packages in an S3-compatible bucket, under <prefix>packages/<sha256>.pkg. An upload is received
 * and verified in DATA/tmp like any other, then sent to the bucket (multipart above the part size)
 * and only then becomes valid. Every master sharing the bucket writes the same key for the same
 * bytes, so a package is stored once; one already there (same size, same digest) is not sent again.
 */
export class S3Store implements PackageStore {
  readonly shared = true;
  readonly tmpDir: string;
  readonly description: string;
  private readonly client: S3Client;
  private readonly temp: TempFolder;
  private readonly place: S3Place;
  /** One probe object per master process, overwritten and removed at every health check. */
  private readonly probeKey: string;

  constructor(readonly dataDir: string, readonly setting: S3Setting, options: S3StoreOptions) {
    this.tmpDir = path.join(dataDir, 'tmp');
    this.temp = new TempFolder(this.tmpDir);
    this.place = { bucket: setting.bucket, endpoint: setting.endpoint };
    this.description = bucketText(this.place);
    this.probeKey = `${setting.prefix}health/${randomUUID()}.probe`;
    // No credentials here: the SDK's chain reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a
    // profile, or an instance role), and no logger is given, so no request is ever logged with them.
    this.client = new S3Client({
      region: setting.region,
      ...(setting.endpoint ? { endpoint: setting.endpoint } : {}),
      forcePathStyle: setting.forcePathStyle,
      // The SDK's default since 2025 adds CRC32 checksums to every upload: headers on the buffered
      // parts lib-storage sends (and a checksum algorithm on the multipart upload, which S3 then
      // requires at completion), an aws-chunked body with a trailer on a streamed PUT. S3-compatible
      // servers that predate them refuse them, ignore them, or store a streamed body framing and all
      // (s3rver does: test/s3-store.test.ts). With WHEN_REQUIRED each request is signed with its
      // payload's SHA-256 instead (x-amz-content-sha256, which S3 checks), and the agents check every
      // byte against the signed manifest anyway.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 3,
      requestHandler: {
        connectionTimeout: 5_000,
        socketTimeout: options.socketTimeoutMs,
        // Every download served through the master holds one connection to the bucket (the SDK's 50 would queue the rest).
        httpAgent: { keepAlive: true, maxSockets: 256 },
        httpsAgent: { keepAlive: true, maxSockets: 256 },
      },
    });
  }

  key(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`not a sha256: ${sha256}`);
    return `${this.setting.prefix}packages/${sha256}.pkg`;
  }

  private unavailable(err: unknown, doing: string): StorageUnavailableError {
    return new StorageUnavailableError(`The package store is unavailable: ${describeS3Error(err, this.place)} (${doing})`, { cause: err });
  }

  /** A master that cannot use its bucket refuses to start, with the reason (exit status 2). */
  async init(): Promise<void> {
    await ownerOnlyFolders([this.dataDir, this.tmpDir]);
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.setting.bucket }));
    } catch (err) {
      throw new ConfigurationError(`the package store cannot be used: ${describeS3Error(err, this.place, 'bucket')}`);
    }
  }

  newTempPath(): string {
    return this.temp.newPath();
  }

  private async head(sha256: string): Promise<{ size: number; sha256: string | null } | null> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.setting.bucket, Key: this.key(sha256) }));
      return { size: head.ContentLength ?? -1, sha256: head.Metadata?.sha256 ?? null };
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async commit(tempPath: string, sha256: string, size: number): Promise<CommitOutcome> {
    const Key = this.key(sha256);
    try {
      const there = await this.head(sha256);
      if (there && there.size === size && (there.sha256 ?? sha256) === sha256) return 'already-stored';
      const upload = new Upload({
        client: this.client,
        params: { Bucket: this.setting.bucket, Key, Body: createReadStream(tempPath), ContentLength: size, ContentType: 'application/octet-stream', Metadata: { sha256 } },
        partSize: this.setting.partSize,
        queueSize: PARTS_IN_FLIGHT,
      });
      await upload.done();
      // What the bucket kept, by its own account: a server that stored a body's framing with it
      // (see the checksum settings above) keeps more bytes than were sent.
      const kept = await this.head(sha256);
      if (kept?.size !== size) {
        await this.client.send(new DeleteObjectCommand({ Bucket: this.setting.bucket, Key })).catch(() => undefined);
        throw new StorageUnavailableError(`The package store is unavailable: ${this.description} kept ${kept ? `${kept.size} bytes` : 'nothing'} of the ${size} sent (storing the package)`);
      }
      return 'stored';
    } catch (err) {
      if (err instanceof StorageUnavailableError) throw err;
      throw this.unavailable(err, 'storing the package');
    }
  }

  async remove(sha256: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.setting.bucket, Key: this.key(sha256) }));
    } catch (err) {
      throw this.unavailable(err, 'removing a package');
    }
  }

  discard(tempPath: string): Promise<void> {
    return this.temp.discard(tempPath);
  }

  async list(): Promise<StoredEntry[]> {
    const entries: StoredEntry[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.setting.bucket, Prefix: `${this.setting.prefix}packages/`, ContinuationToken: token }));
        for (const object of page.Contents ?? []) {
          const sha256 = KEY.exec(object.Key ?? '')?.[1];
          if (sha256 && object.Key === this.key(sha256)) entries.push({ sha256, size: object.Size ?? 0, modifiedAt: object.LastModified ?? new Date(0) });
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      throw this.unavailable(err, 'listing the packages');
    }
    return entries;
  }

  async source(sha256: string): Promise<PackageSource | null> {
    let there: Awaited<ReturnType<S3Store['head']>>;
    try {
      there = await this.head(sha256);
    } catch (err) {
      throw this.unavailable(err, 'reading a package');
    }
    if (!there) return null;
    return {
      size: there.size,
      open: async (start, end) => {
        try {
          const got = await this.client.send(new GetObjectCommand({ Bucket: this.setting.bucket, Key: this.key(sha256), Range: `bytes=${start}-${end}` }));
          return got.Body as Readable;
        } catch (err) {
          throw this.unavailable(err, 'reading a package');
        }
      },
    };
  }

  presignedUrl(sha256: string, seconds: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.setting.bucket, Key: this.key(sha256) }), { expiresIn: seconds });
  }

  async withLocalCopy<T>(sha256: string, read: (file: string) => Promise<T>): Promise<T> {
    const copy = this.temp.newPath('read');
    try {
      try {
        const got = await this.client.send(new GetObjectCommand({ Bucket: this.setting.bucket, Key: this.key(sha256) }));
        await pipeline(got.Body as Readable, createWriteStream(copy, { flags: 'wx', mode: 0o600 }));
      } catch (err) {
        throw this.unavailable(err, 'reading a package');
      }
      return await read(copy);
    } finally {
      await rm(copy, { force: true });
    }
  }

  clearTemp(): Promise<number> {
    return this.temp.clear();
  }

  tempFiles(): Promise<string[]> {
    return this.temp.list();
  }

  /**
   * A small object written and removed. HeadBucket would pass with read-only credentials, a bucket
   * policy that denies writes, or a server out of space, all of which refuse every upload. The
   * cost is one PUT and one DELETE per /health answer computed (at most every 2 s).
   */
  async probeWrite(): Promise<void> {
    const Key = this.probeKey;
    try {
      const Body = 'propagator health check\n';
      await this.client.send(new PutObjectCommand({ Bucket: this.setting.bucket, Key, Body, ContentLength: Buffer.byteLength(Body) }));
      await this.client.send(new DeleteObjectCommand({ Bucket: this.setting.bucket, Key }));
    } catch (err) {
      throw new StorageUnavailableError(describeS3Error(err, this.place), { cause: err });
    }
  }

  async readMark(): Promise<string | null> {
    try {
      const got = await this.client.send(new GetObjectCommand({ Bucket: this.setting.bucket, Key: `${this.setting.prefix}propagator-store` }));
      return (await got.Body?.transformToString())?.trim() || null;
    } catch (err) {
      if (isMissing(err)) return null;
      throw new StorageUnavailableError(describeS3Error(err, this.place), { cause: err });
    }
  }

  /** Masters marking a new bucket at once write the same name (the database's), so a plain PUT does. */
  async writeMark(id: string): Promise<void> {
    const Body = `${id}\n`;
    await this.client.send(new PutObjectCommand({ Bucket: this.setting.bucket, Key: `${this.setting.prefix}propagator-store`, Body, ContentLength: Buffer.byteLength(Body) }));
  }

  /** Closes the bucket's kept-alive connections (a master stopping). */
  close(): void {
    this.client.destroy();
  }
}
