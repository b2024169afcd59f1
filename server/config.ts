import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ValidationError } from '../lib/errors.js';
import { isValidVersion } from '../lib/version.js';
import type { DatabaseLocation } from './db/database.js';
import { parseDatabaseLocation } from './db/location.js';
import { parsePresign, parseStoreSetting, type StoreSetting } from './store-setting.js';

/** The master's settings, read once at start (flags > environment > defaults) and frozen. */
export interface MasterConfig {
  host: string;
  port: number;
  dataDir: string;
  /** A SQLite file (default DATA/propagator.sqlite) or a PostgreSQL server shared by several masters. */
  database: DatabaseLocation;
  /**
   * Balancers whose X-Forwarded-For is believed (addresses, CIDR ranges, or loopback); empty: none,
   * and the client's address is the connection's. Throttles and enrollment records use it.
   */
  trustProxy: string[];
  /** Where packages are kept: DATA/packages, another folder (a shared mount) or an S3 bucket. */
  store: StoreSetting;
  /** Agents fetch packages from the bucket with presigned URLs that live this long; null: through the master. */
  storePresignSeconds: number | null;
  trustPath: string;
  /** Name the master shows for itself in "Print servers". */
  name: string;
  /** Product and version given on the command line or environment (null: keep the stored ones). */
  product: string | null;
  productVersion: string | null;
  tlsCert: string | null;
  tlsKey: string | null;
  maxUploadBytes: number;
  /** Uploads received at once; one more is refused (429) before its body is read. */
  maxParallelUploads: number;
  /** An upload or a download with no byte moving for this long is cut. */
  idleTimeoutMs: number;
  /** A package download whose client takes no data for this long is ended and its file closed. */
  sendIdleTimeoutMs: number;
  /** Headers must arrive within this; a request with a small body (all but uploads), whole within requestTimeoutMs. */
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  /** Secrets from the environment only: they never go on a command line (visible in ps). */
  adminPassword: string | null;
  enrollToken: string | null;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** A slave whose last contact is older than this is "late", older than offlineAfterMs "offline". */
  lateAfterMs: number;
  offlineAfterMs: number;
  /** Accept new servers without the administrator (trusted networks only); default off. */
  autoAccept: boolean;
  /** Failed logins allowed per address per 15 minutes (failed Basic credentials: three times as many). */
  loginAttemptsPerWindow: number;
  /** Failed logins allowed per user name per 15 minutes, all addresses together (known devices exempt). */
  loginAttemptsPerUser: number;
  /** Mailbox sessions served per minute, all agents together; 0 means no cap. */
  mailboxSessionsPerMinute: number;
  /** Commands pushed to bidirectional agents at once. */
  pushConcurrency: number;
  /** Bidirectional targets transferring at once; the others wait their turn. */
  parallelTransfers: number;
  /** A target still open after this long is timed out. */
  bidirectionalDeadlineMs: number;
  mailboxDeadlineMs: number;
}

export const DEFAULT_PRODUCT = 'watchdoc';
/** Time for a client to send its headers, and a small-body request whole (uploads excepted). */
const HEADERS_TIMEOUT_MS = 20_000;
const REQUEST_TIMEOUT_MS = 30_000;
export const DEFAULT_PRODUCT_VERSION = '1.0.0';

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kib: 1024, m: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gib: 1024 ** 3 };

/** "4GiB", "500MiB", "1048576" → bytes. */
export function parseSize(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = UNITS[(match?.[2] ?? 'x').toLowerCase()];
  if (!match || unit === undefined) throw new ValidationError(`not a size: "${text}" (examples: 4GiB, 500MiB, 1048576)`);
  return Math.floor(Number(match[1]) * unit);
}

const PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/** "127.0.0.1, 10.0.0.0/8, loopback" → the list express's trust proxy takes; a clear error otherwise. */
export function parseTrustProxy(text: string | undefined): string[] {
  if (!text) return [];
  const list = text.split(',').map((s) => s.trim()).filter(Boolean);
  for (const item of list) {
    const [address, prefix, extra] = item.split('/');
    const family = net.isIP(address ?? '');
    const prefixOk = prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 6 ? 128 : 32));
    if (!(PROXY_NAMES.has(item) || (family !== 0 && prefixOk && extra === undefined))) {
      throw new ValidationError(`--trust-proxy: "${item}" is not an address, a CIDR range (10.0.0.0/8) or one of loopback, linklocal, uniquelocal`);
    }
  }
  return list;
}

const FLAGS = {
  host: { type: 'string', env: 'PROPAGATOR_HOST' },
  port: { type: 'string', env: 'PROPAGATOR_PORT' },
  data: { type: 'string', env: 'PROPAGATOR_DATA_DIR' },
  database: { type: 'string', env: 'PROPAGATOR_DATABASE_URL' },
  'trust-proxy': { type: 'string', env: 'PROPAGATOR_TRUST_PROXY' },
  store: { type: 'string', env: 'PROPAGATOR_STORE' },
  'store-presign': { type: 'string', env: 'PROPAGATOR_STORE_PRESIGN' },
  trust: { type: 'string', env: 'PROPAGATOR_TRUST' },
  name: { type: 'string', env: 'PROPAGATOR_NAME' },
  product: { type: 'string', env: 'PROPAGATOR_PRODUCT' },
  'product-version': { type: 'string', env: 'PROPAGATOR_PRODUCT_VERSION' },
  'tls-cert': { type: 'string', env: 'PROPAGATOR_TLS_CERT' },
  'tls-key': { type: 'string', env: 'PROPAGATOR_TLS_KEY' },
  'max-upload': { type: 'string', env: 'PROPAGATOR_MAX_UPLOAD' },
  'max-parallel-uploads': { type: 'string', env: 'PROPAGATOR_MAX_PARALLEL_UPLOADS' },
  'upload-idle-timeout': { type: 'string', env: 'PROPAGATOR_UPLOAD_IDLE_TIMEOUT' },
  'send-idle-timeout': { type: 'string', env: 'PROPAGATOR_SEND_IDLE_TIMEOUT' },
  'log-level': { type: 'string', env: 'PROPAGATOR_LOG_LEVEL' },
  'mailbox-cap': { type: 'string', env: 'PROPAGATOR_MAILBOX_CAP' },
  'parallel-transfers': { type: 'string', env: 'PROPAGATOR_PARALLEL_TRANSFERS' },
  'deadline-bidirectional': { type: 'string', env: 'PROPAGATOR_DEADLINE_BIDIRECTIONAL' },
  'deadline-mailbox': { type: 'string', env: 'PROPAGATOR_DEADLINE_MAILBOX' },
  'auto-accept': { type: 'boolean', env: 'PROPAGATOR_AUTO_ACCEPT' },
} as const;

/** The flag table as the README shows it: flag, environment variable, default. */
export const MASTER_OPTIONS_HELP = `propagator master [--host H] [--port N] [--data DIR] [--database FILE|postgres://URL] [--trust PATH] [--name NAME]
                  [--store DIR|s3://BUCKET?endpoint=URL&region=R&forcePathStyle=true&prefix=P&partSize=SIZE] [--store-presign S]
                  [--product NAME] [--product-version X.Y.Z] [--tls-cert PEM --tls-key PEM]
                  [--trust-proxy ADDRESSES] [--max-upload SIZE] [--max-parallel-uploads N] [--upload-idle-timeout S] [--send-idle-timeout S]
                  [--mailbox-cap N] [--parallel-transfers N]
                  [--deadline-bidirectional S] [--deadline-mailbox S] [--auto-accept] [--log-level debug|info|warn|error]
    Starts the master. Each flag has an environment variable (PROPAGATOR_HOST, PROPAGATOR_PORT,
    PROPAGATOR_DATA_DIR, PROPAGATOR_TRUST, ...); flags win over the environment. Secrets come from
    the environment only: PROPAGATOR_ADMIN_PASSWORD, PROPAGATOR_ENROLL_TOKEN, and a bucket's
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.`;

const schema = z.object({
  host: z.string().min(1),
  port: z.coerce.number({ error: 'port must be a number' }).int().min(0, { error: 'port must be 0 to 65535' }).max(65535, { error: 'port must be 0 to 65535' }),
  product: z.string().regex(/^[a-z0-9._-]{1,64}$/, { error: 'product must be 1 to 64 of a-z 0-9 . _ -' }).nullable(),
  productVersion: z.string().refine(isValidVersion, { error: 'product version must be 1 to 4 dot-separated numbers' }).nullable(),
  logLevel: z.enum(['debug', 'info', 'warn', 'error'], { error: 'log level must be debug, info, warn or error' }),
  maxParallelUploads: z.coerce.number({ error: 'max parallel uploads must be a number' }).int({ error: 'max parallel uploads must be a whole number' }).min(1, { error: 'max parallel uploads must be 1 or more' }),
  uploadIdleTimeout: z.coerce.number({ error: 'the upload idle timeout must be a number of seconds' }).positive({ error: 'the upload idle timeout must be more than 0 seconds' }),
  sendIdleTimeout: z.coerce.number({ error: 'the send idle timeout must be a number of seconds' }).positive({ error: 'the send idle timeout must be more than 0 seconds' }),
  mailboxCap: z.coerce.number({ error: 'mailbox cap must be a number' }).int().min(0, { error: 'mailbox cap must be 0 (no cap) or more' }),
  parallelTransfers: z.coerce.number({ error: 'parallel transfers must be a number' }).int().min(1, { error: 'parallel transfers must be 1 or more' }),
  deadlineBidirectional: z.coerce.number({ error: 'the bidirectional deadline must be a number of seconds' }).positive({ error: 'the bidirectional deadline must be more than 0 seconds' }),
  deadlineMailbox: z.coerce.number({ error: 'the mailbox deadline must be a number of seconds' }).positive({ error: 'the mailbox deadline must be more than 0 seconds' }),
});

export function loadMasterConfig(args: string[], env: NodeJS.ProcessEnv, cwd = process.cwd()): Readonly<MasterConfig> {
  const options = Object.fromEntries(Object.entries(FLAGS).map(([k, v]) => [k, { type: v.type }])) as Record<keyof typeof FLAGS, { type: 'string' | 'boolean' }>;
  const { values, positionals } = parseArgs({ args, options, allowPositionals: true });
  if (positionals.length > 0) throw new ValidationError(`unexpected argument ${positionals[0]}`);
  const pick = (flag: keyof typeof FLAGS): string | undefined => {
    const value = values[flag];
    return typeof value === 'string' ? value : env[FLAGS[flag].env] || undefined;
  };
  const flagOn = (flag: keyof typeof FLAGS): boolean => values[flag] === true || /^(1|true|yes|on)$/i.test(env[FLAGS[flag].env] ?? '');

  const parsed = schema.safeParse({
    host: pick('host') ?? '0.0.0.0',
    port: pick('port') ?? '8080',
    product: pick('product') ?? null,
    productVersion: pick('product-version') ?? null,
    logLevel: pick('log-level') ?? 'info',
    maxParallelUploads: pick('max-parallel-uploads') ?? '4',
    uploadIdleTimeout: pick('upload-idle-timeout') ?? '60',
    sendIdleTimeout: pick('send-idle-timeout') ?? '60',
    mailboxCap: pick('mailbox-cap') ?? '0',
    parallelTransfers: pick('parallel-transfers') ?? '8',
    deadlineBidirectional: pick('deadline-bidirectional') ?? '600',
    deadlineMailbox: pick('deadline-mailbox') ?? '7200',
  });
  if (!parsed.success) throw new ValidationError(parsed.error.issues[0]?.message ?? 'invalid configuration');
  const tlsCert = pick('tls-cert') ?? null;
  const tlsKey = pick('tls-key') ?? null;
  if ((tlsCert === null) !== (tlsKey === null)) throw new ValidationError('--tls-cert and --tls-key go together');
  const dataDir = path.resolve(cwd, pick('data') ?? 'data');
  const store = parseStoreSetting(pick('store'), dataDir, cwd);
  const { mailboxCap, deadlineBidirectional, deadlineMailbox, uploadIdleTimeout, sendIdleTimeout, ...rest } = parsed.data;
  const idleTimeoutMs = Math.max(1, Math.round(uploadIdleTimeout * 1000));
  return Object.freeze({
    ...rest,
    idleTimeoutMs,
    sendIdleTimeoutMs: Math.max(1, Math.round(sendIdleTimeout * 1000)),
    // A client silent for the idle timeout is cut anyway: these never wait longer than it.
    headersTimeoutMs: Math.min(HEADERS_TIMEOUT_MS, idleTimeoutMs),
    requestTimeoutMs: Math.min(REQUEST_TIMEOUT_MS, idleTimeoutMs),
    mailboxSessionsPerMinute: mailboxCap,
    bidirectionalDeadlineMs: deadlineBidirectional * 1000,
    mailboxDeadlineMs: deadlineMailbox * 1000,
    pushConcurrency: 8,
    dataDir,
    database: parseDatabaseLocation(pick('database'), dataDir, cwd),
    trustProxy: parseTrustProxy(pick('trust-proxy')),
    store,
    storePresignSeconds: parsePresign(pick('store-presign'), store),
    trustPath: path.resolve(cwd, pick('trust') ?? 'certs/trusted'),
    name: pick('name') ?? os.hostname(),
    tlsCert: tlsCert && path.resolve(cwd, tlsCert),
    tlsKey: tlsKey && path.resolve(cwd, tlsKey),
    maxUploadBytes: parseSize(pick('max-upload') ?? '4GiB'),
    adminPassword: env.PROPAGATOR_ADMIN_PASSWORD || null,
    enrollToken: env.PROPAGATOR_ENROLL_TOKEN || null,
    lateAfterMs: 2 * 60_000,
    offlineAfterMs: 10 * 60_000,
    loginAttemptsPerWindow: 10,
    autoAccept: flagOn('auto-accept'),
    loginAttemptsPerUser: 50,
  });
}
