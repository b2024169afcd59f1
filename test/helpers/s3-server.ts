import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { utimes } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 's3-server-main.js');

/** s3rver knows one account; it checks the key id (InvalidAccessKeyId) but not SigV4 signatures. */
export const S3_KEY_ID = 'S3RVER';
/** Any secret passes s3rver: this one proves the master never shows it. */
export const S3_SECRET = 'test-secret-never-in-a-log-5f0c2a9e';
export const S3_ENV = { AWS_ACCESS_KEY_ID: S3_KEY_ID, AWS_SECRET_ACCESS_KEY: S3_SECRET, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };

export interface S3Server {
  port: number;
  endpoint: string;
  /** Where s3rver keeps the objects. */
  dir: string;
  /** A client of the test's own, with the master's checksum settings, to look into the bucket. */
  client: S3Client;
  /** Kills the server process (SIGKILL: the bucket service is gone at once). */
  stop(): Promise<void>;
  /** Starts it again on the same port and folder (the objects are still there). */
  start(): Promise<void>;
  /** Keys and sizes under a prefix of a bucket. */
  objects(bucket: string, prefix?: string): Promise<{ key: string; size: number; modified: Date }[]>;
  sha256(bucket: string, key: string): Promise<string>;
  put(bucket: string, key: string, body: Buffer | string): Promise<void>;
  remove(bucket: string, key: string): Promise<void>;
  /** Makes an object look `seconds` old (s3rver's LastModified is its file's mtime). */
  age(bucket: string, key: string, seconds: number): Promise<void>;
  /** The `s3://` URL of a bucket on this server, with the test's other parameters. */
  url(bucket: string, extra?: string): string;
}

function spawnServer(dir: string, port: number, buckets: string[]): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [MAIN, dir, String(port), ...buckets], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`s3rver did not start: ${err}`)), 20_000);
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const match = /s3rver listening on (\d+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve({ child, port: Number(match[1]) });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited with ${code}: ${err}`));
    });
  });
}

/** s3rver in a child process on a loopback port, storing under `dir`, with `buckets` created. */
export async function startS3Server(dir: string, buckets: string[]): Promise<S3Server> {
  // The test's own client would print the SDK's seven-line Node 22 notice into the test output.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const first = await spawnServer(dir, 0, buckets);
  let child = first.child;
  const port = first.port;
  const endpoint = `http://127.0.0.1:${port}`;
  const client = new S3Client({
    region: 'us-east-1', endpoint, forcePathStyle: true, credentials: { accessKeyId: S3_KEY_ID, secretAccessKey: S3_SECRET },
    requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const server: S3Server = {
    port, endpoint, dir, client,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    },
    start: async () => {
      ({ child } = await spawnServer(dir, port, []));
    },
    objects: async (bucket, prefix = '') => {
      const found: { key: string; size: number; modified: Date }[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
        for (const o of page.Contents ?? []) found.push({ key: o.Key ?? '', size: o.Size ?? 0, modified: o.LastModified ?? new Date(0) });
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    },
    sha256: async (bucket, key) => {
      const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      const hash = createHash('sha256');
      for await (const chunk of got.Body as Readable) hash.update(chunk as Buffer);
      return hash.digest('hex');
    },
    put: async (bucket, key, body) => {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
    },
    remove: async (bucket, key) => {
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
    },
    age: async (bucket, key, seconds) => {
      const file = path.join(dir, bucket, `${key}._S3rver_object`);
      const then = new Date(Date.now() - seconds * 1000);
      await utimes(file, then, then);
    },
    url: (bucket, extra = '') => `s3://${bucket}?endpoint=${endpoint}&region=us-east-1&forcePathStyle=true${extra}`,
  };
  return server;
}
