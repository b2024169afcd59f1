import type { Manifest } from '../lib/manifest.js';
import type { CertificateSummary } from '../lib/package-verifier.js';

/** The master's domain types: what services and views work with (never raw rows). */

export type PackageState = 'storing' | 'valid' | 'missing';

export interface StoredPackage {
  id: number;
  name: string;
  product: string;
  version: string;
  /** The package file as uploaded. */
  size: number;
  sha256: string;
  payload: { size: number; sha256: string };
  /** SHA-256 of the exact signed manifest.json bytes; commands carry it to the agents. */
  manifestSha256: string;
  manifest: Manifest;
  signer: string;
  chain: CertificateSummary[];
  signerNotAfter: string;
  expires: string | null;
  minVersion: string | null;
  description: string | null;
  state: PackageState;
  uploadedBy: string;
  uploadedAt: string;
}

export type ServerMode = 'bidirectional' | 'mailbox';
export type ServerStatus = 'online' | 'late' | 'offline';

export interface StagedPackage {
  sha256: string;
  product: string;
  version: string;
}

/** An accepted slave server: its name, its agent's key, where and how the master reaches it. */
export interface SlaveRecord {
  id: number;
  name: string;
  mode: ServerMode;
  address: string | null;
  product: string | null;
  version: string | null;
  /** The agent's Ed25519 public key (SPKI PEM); null for a server enrolled before agents had keys. */
  publicKey: string | null;
  keyFingerprint: string | null;
  staged: StagedPackage[];
  freeDiskBytes: number | null;
  lastSeen: string | null;
  enrolledAt: string;
  requestedFrom: string | null;
  acceptedBy: string | null;
  acceptedAt: string | null;
  /** A mode or address the agent reports that the administrator has not accepted (yet). */
  requestedChange: { mode: ServerMode; address: string | null; state: 'pending' | 'rejected' } | null;
  /** The slave's clock minus the master's (ms), as last measured from its calls; null: not yet. */
  clockOffsetMs: number | null;
}

/** An enrollment waiting for the administrator, or refused by them. */
export interface ServerRequest {
  id: number;
  name: string;
  state: 'pending' | 'rejected';
  mode: ServerMode;
  address: string | null;
  product: string | null;
  version: string | null;
  publicKey: string;
  keyFingerprint: string;
  requestedFrom: string | null;
  requestedAt: string;
  decidedBy: string | null;
  decidedAt: string | null;
}

/** A one-time token that enrolls exactly one name, once (shown once; only its hash is kept). */
export interface EnrollToken {
  id: number;
  name: string;
  createdBy: string;
  createdAt: string;
  expiresAt: string;
  usedAt: string | null;
  serverId: number | null;
}

/** One line of "Print servers" and of GET /api/servers. */
export interface ServerView {
  id: number;
  name: string;
  role: 'master' | 'slave';
  mode: ServerMode | null;
  status: ServerStatus;
  product: string | null;
  version: string | null;
  lastSeen: string | null;
  address: string | null;
  staged: StagedPackage[];
  freeDiskBytes: number | null;
  /** The agent's key fingerprint (null for the master, and for servers enrolled before keys). */
  keyFingerprint: string | null;
  requestedChange: SlaveRecord['requestedChange'];
  /** The slave's clock minus the master's (ms); null for the master and before any measurement. */
  clockOffsetMs: number | null;
  /** Set when the offset is beyond what signed calls allow (clock-offset.ts). */
  clockWarning: string | null;
}

export interface Session {
  idHash: string;
  csrfToken: string;
  username: string | null;
  createdAt: string;
  expiresAt: string;
}

export type CommandType = 'propagate' | 'apply';
export type CommandState = 'held' | 'queued' | 'delivered' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'timedout';
/** Not finished: held (waiting for a transfer slot), queued, delivered, running. */
export const OPEN_COMMAND_STATES: CommandState[] = ['held', 'queued', 'delivered', 'running'];

/** One piece of work for one slave: stage a package there, or install it. */
export interface Command {
  id: string;
  operationId: number | null;
  serverId: number | null;
  serverName: string;
  type: CommandType;
  packageId: number | null;
  packageName: string;
  packageSha256: string;
  payloadSha256: string;
  manifestSha256: string;
  packageSize: number;
  product: string;
  version: string;
  allowDowngrade: boolean;
  state: CommandState;
  message: string;
  versionBefore: string | null;
  versionAfter: string | null;
  attempts: number;
  nextAttemptAt: string | null;
  deadlineAt: string | null;
  createdAt: string;
  deliveredAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  updatedAt: string;
}

/** A new command for a slave: what the package and the server say, nothing done yet. */
export function newCommand(input: {
  id: string;
  operationId: number | null;
  server: SlaveRecord;
  pkg: StoredPackage;
  type: CommandType;
  allowDowngrade: boolean;
  state: 'held' | 'queued';
  message: string;
  deadlineAt: string | null;
  at: string;
}): Command {
  const { server, pkg, at } = input;
  return {
    id: input.id, operationId: input.operationId, serverId: server.id, serverName: server.name, type: input.type,
    packageId: pkg.id, packageName: pkg.name, packageSha256: pkg.sha256, payloadSha256: pkg.payload.sha256, manifestSha256: pkg.manifestSha256, packageSize: pkg.size,
    product: pkg.product, version: pkg.version, allowDowngrade: input.allowDowngrade, state: input.state, message: input.message,
    versionBefore: server.version, versionAfter: null, attempts: 0, nextAttemptAt: null, deadlineAt: input.deadlineAt,
    createdAt: at, deliveredAt: null, startedAt: null, finishedAt: null, updatedAt: at,
  };
}

export type OperationAction = 'propagate' | 'apply';
export type OperationState = 'running' | 'succeeded' | 'failed' | 'cancelled';
export type TargetState = 'pending' | 'running' | 'succeeded' | 'failed' | 'timedout' | 'cancelled';

export interface Operation {
  id: number;
  action: OperationAction;
  packageId: number | null;
  packageName: string;
  product: string;
  version: string;
  allowDowngrade: boolean;
  state: OperationState;
  createdBy: string;
  createdAt: string;
  finishedAt: string | null;
  retryOf: number | null;
}

export type TargetCounts = Record<'total' | TargetState, number>;

export interface CommandEvent {
  commandId: string;
  state: CommandState;
  message: string;
  at: string;
}

/** How a command shows in an operation's report. */
export function targetState(state: CommandState): TargetState {
  if (state === 'held' || state === 'queued') return 'pending';
  if (state === 'delivered' || state === 'running') return 'running';
  return state;
}
