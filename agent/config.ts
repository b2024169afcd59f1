import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { FINGERPRINT_PATTERN } from '../lib/agent-keys.js';
import { agentNameSchema, modeSchema, productSchema } from '../lib/agent-protocol.js';
import { ValidationError } from '../lib/errors.js';
import { isValidVersion } from '../lib/version.js';

/** The agent's settings, read once at start (flags > environment > defaults) and frozen. */
export interface AgentConfig {
  masterUrl: string;
  name: string;
  mode: 'bidirectional' | 'mailbox';
  dataDir: string;
  /** From PROPAGATOR_ENROLL_TOKEN, never a flag: a command line is visible to every user (ps, /proc). */
  enrollToken: string | null;
  /** A file holding the enrollment token (read at the first start). */
  enrollTokenFile: string | null;
  /** The master's key fingerprint, when the administrator gives it: then even the first contact cannot be intercepted. */
  masterFingerprint: string | null;
  trustPath: string;
  /** Bidirectional mode: where the agent listens, and the URL the master calls it at (null: derived). */
  host: string;
  port: number;
  advertiseUrl: string | null;
  product: string;
  /** The version the slave runs before its first update through Propagator. */
  initialVersion: string | null;
  caFile: string | null;
  pollMinMs: number;
  pollMaxMs: number;
  backoffMaxMs: number;
  heartbeatMs: number;
  hookTimeoutMs: number;
  /** The longest wait between two download attempts (the backoff doubles up to it). */
  downloadRetryMaxMs: number;
  /** A staged package not used for this long is removed. */
  dropStagedAfterMs: number;
  /** Without a declared unpackedSize, a payload may unpack to this many times its size. */
  maxUnpackRatio: number;
  keepReleases: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
}

const FLAGS = {
  master: 'PROPAGATOR_MASTER_URL',
  name: 'PROPAGATOR_AGENT_NAME',
  mode: 'PROPAGATOR_AGENT_MODE',
  data: 'PROPAGATOR_AGENT_DATA_DIR',
  'enroll-token-file': 'PROPAGATOR_ENROLL_TOKEN_FILE',
  'master-fingerprint': 'PROPAGATOR_MASTER_FINGERPRINT',
  trust: 'PROPAGATOR_TRUST',
  host: 'PROPAGATOR_AGENT_HOST',
  port: 'PROPAGATOR_AGENT_PORT',
  advertise: 'PROPAGATOR_AGENT_ADVERTISE',
  product: 'PROPAGATOR_PRODUCT',
  'initial-version': 'PROPAGATOR_INITIAL_VERSION',
  ca: 'PROPAGATOR_MASTER_CA',
  'poll-min': 'PROPAGATOR_POLL_MIN',
  'poll-max': 'PROPAGATOR_POLL_MAX',
  heartbeat: 'PROPAGATOR_HEARTBEAT',
  'hook-timeout': 'PROPAGATOR_HOOK_TIMEOUT',
  'max-unpack-ratio': 'PROPAGATOR_MAX_UNPACK_RATIO',
  'download-retry-max': 'PROPAGATOR_DOWNLOAD_RETRY_MAX',
  'drop-staged-after': 'PROPAGATOR_DROP_STAGED_AFTER',
  'log-level': 'PROPAGATOR_LOG_LEVEL',
} as const;

export const AGENT_HELP = `propagator agent --master URL --name NAME --mode bidirectional|mailbox --data DIR --trust PATH [--enroll-token-file FILE]
                 [--port N] [--host H] [--advertise URL] [--product watchdoc] [--initial-version X.Y.Z] [--ca CA.pem]
                 [--master-fingerprint SHA256:...] [--poll-min S] [--poll-max S] [--heartbeat S] [--hook-timeout S] [--log-level L]
                 [--max-unpack-ratio N] [--download-retry-max S] [--drop-staged-after DAYS]
    Runs the slave agent. The enrollment token is needed on the first start only: in a file
    (--enroll-token-file) or in PROPAGATOR_ENROLL_TOKEN, never on the command line. A mailbox agent
    opens no port. Each flag has an environment variable (PROPAGATOR_MASTER_URL, PROPAGATOR_AGENT_NAME, ...).`;

const seconds = (label: string) => z.coerce.number({ error: `${label} must be a number of seconds` }).positive({ error: `${label} must be more than 0 seconds` });

const schema = z.object({
  masterUrl: z.url({ error: '--master must be the URL of the master, e.g. https://master.example:8080' }),
  name: agentNameSchema,
  mode: modeSchema,
  port: z.coerce.number({ error: 'port must be a number' }).int().min(0).max(65535, { error: 'port must be 0 to 65535' }),
  product: productSchema,
  initialVersion: z.string().refine(isValidVersion, { error: 'the initial version must be 1 to 4 dot-separated numbers' }).nullable(),
  pollMin: seconds('--poll-min'),
  pollMax: seconds('--poll-max'),
  heartbeat: seconds('--heartbeat'),
  hookTimeout: seconds('--hook-timeout'),
  downloadRetryMax: seconds('--download-retry-max'),
  dropStagedAfter: z.coerce.number({ error: '--drop-staged-after must be a number of days' }).positive({ error: '--drop-staged-after must be more than 0 days' }),
  maxUnpackRatio: z.coerce.number({ error: '--max-unpack-ratio must be a number' }).min(1, { error: '--max-unpack-ratio must be 1 or more' }),
  logLevel: z.enum(['debug', 'info', 'warn', 'error']),
});

export function loadAgentConfig(args: string[], env: NodeJS.ProcessEnv, cwd = process.cwd()): Readonly<AgentConfig> {
  if (args.some((a) => a === '--enroll-token' || a.startsWith('--enroll-token='))) {
    throw new ValidationError('--enroll-token would show the token to every user of this machine (ps, /proc): put it in a file (--enroll-token-file FILE, owner-only) or in PROPAGATOR_ENROLL_TOKEN');
  }
  const options = Object.fromEntries(Object.keys(FLAGS).map((k) => [k, { type: 'string' as const }])) as Record<keyof typeof FLAGS, { type: 'string' }>;
  const { values, positionals } = parseArgs({ args, options, allowPositionals: true });
  if (positionals.length > 0) throw new ValidationError(`unexpected argument ${positionals[0]}`);
  const pick = (flag: keyof typeof FLAGS): string | undefined => values[flag] ?? (env[FLAGS[flag]] || undefined);
  if (!pick('master')) throw new ValidationError('missing --master (the URL of the master)');
  if (!pick('mode')) throw new ValidationError('missing --mode (bidirectional or mailbox)');

  const parsed = schema.safeParse({
    masterUrl: pick('master'),
    name: pick('name') ?? os.hostname().split('.')[0],
    mode: pick('mode'),
    port: pick('port') ?? '8081',
    product: pick('product') ?? 'watchdoc',
    initialVersion: pick('initial-version') ?? null,
    pollMin: pick('poll-min') ?? '5',
    pollMax: pick('poll-max') ?? '60',
    heartbeat: pick('heartbeat') ?? '30',
    hookTimeout: pick('hook-timeout') ?? '300',
    downloadRetryMax: pick('download-retry-max') ?? '60',
    dropStagedAfter: pick('drop-staged-after') ?? '30',
    maxUnpackRatio: pick('max-unpack-ratio') ?? '10',
    logLevel: pick('log-level') ?? 'info',
  });
  if (!parsed.success) throw new ValidationError(parsed.error.issues[0]?.message ?? 'invalid configuration');
  const c = parsed.data;
  if (c.pollMax < c.pollMin) throw new ValidationError('--poll-max must not be less than --poll-min');
  const host = pick('host') ?? '0.0.0.0';
  // Without --advertise, the agent derives its URL once it listens (so --port 0 works too).
  const advertise = pick('advertise') ?? null;
  if (advertise !== null && !z.url().safeParse(advertise).success) throw new ValidationError('--advertise must be a URL the master can call');
  const ca = pick('ca');
  const masterFingerprint = pick('master-fingerprint') ?? null;
  if (masterFingerprint !== null && !FINGERPRINT_PATTERN.test(masterFingerprint)) {
    throw new ValidationError('--master-fingerprint must be the master key fingerprint the master shows (SHA256: and 43 characters)');
  }
  const tokenFile = pick('enroll-token-file');
  return Object.freeze({
    masterUrl: c.masterUrl.replace(/\/+$/, ''),
    name: c.name,
    mode: c.mode,
    dataDir: path.resolve(cwd, pick('data') ?? 'agent-data'),
    enrollToken: env.PROPAGATOR_ENROLL_TOKEN || null,
    enrollTokenFile: tokenFile ? path.resolve(cwd, tokenFile) : null,
    masterFingerprint,
    trustPath: path.resolve(cwd, pick('trust') ?? 'certs/trusted'),
    host,
    port: c.port,
    advertiseUrl: advertise,
    product: c.product,
    initialVersion: c.initialVersion,
    caFile: ca ? path.resolve(cwd, ca) : null,
    pollMinMs: c.pollMin * 1000,
    pollMaxMs: c.pollMax * 1000,
    backoffMaxMs: Math.max(c.pollMax * 1000, 300_000),
    heartbeatMs: c.heartbeat * 1000,
    hookTimeoutMs: c.hookTimeout * 1000,
    downloadRetryMaxMs: c.downloadRetryMax * 1000,
    dropStagedAfterMs: c.dropStagedAfter * 24 * 3600_000,
    maxUnpackRatio: c.maxUnpackRatio,
    keepReleases: 3,
    logLevel: c.logLevel,
  });
}
