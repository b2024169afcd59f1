import { z } from 'zod';
import { FINGERPRINT_PATTERN } from './agent-keys.js';
import { isValidVersion } from './version.js';

/**
 * The messages between the master and its agents, in both modes. Agents enroll with their own key
 * (agent-keys.ts), open sessions by signing a challenge, and carry the session token in
 * "Authorization: Bearer"; everything the master says is signed (request-signing.ts). Commands
 * carry ids, and the agent executes an id once.
 */
const version = z.string().refine(isValidVersion, { error: 'must be 1 to 4 dot-separated numbers' });
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, { error: 'must be 64 lowercase hexadecimal digits' });
const instant = z.string().refine((s) => !Number.isNaN(Date.parse(s)), { error: 'must be an ISO date' });

export const agentNameSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, { error: 'The server name must be 1 to 64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)' });
export const modeSchema = z.enum(['bidirectional', 'mailbox'], { error: 'The mode must be bidirectional or mailbox' });
export const productSchema = z.string().regex(/^[a-z0-9._-]{1,64}$/, { error: 'The product must be 1 to 64 of a-z 0-9 . _ -' });

export const stagedSchema = z.object({ sha256, product: productSchema, version });

/** Where the master calls a bidirectional agent: an http(s) URL without credentials, bounded. */
export const agentAddressSchema = z.string().max(512, { error: 'The address must be at most 512 characters' }).refine((text) => {
  try {
    const url = new URL(text);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.username === '' && url.password === '' && url.hostname !== '';
  } catch {
    return false;
  }
}, { error: 'The address must be an http:// or https:// URL without user name or password' });

export const agentStatusSchema = z.object({
  name: agentNameSchema,
  mode: modeSchema,
  address: agentAddressSchema.nullable(),
  product: productSchema,
  version: version.nullable(),
  staged: z.array(stagedSchema).max(100),
  freeDiskBytes: z.number().int().nonnegative().nullable(),
});
export type AgentStatus = z.infer<typeof agentStatusSchema>;

const fingerprint = z.string().regex(FINGERPRINT_PATTERN, { error: 'must be a key fingerprint (SHA256:…)' });
const admission = z.enum(['pending', 'accepted', 'rejected']);

/** The enrollment token travels in the Authorization header, checked before this body is read. */
export const enrollRequestSchema = z.object({
  status: agentStatusSchema,
  publicKey: z.string({ error: 'The agent public key is missing' }).max(1000),
});
export type EnrollRequest = z.infer<typeof enrollRequestSchema>;

export const enrollResponseSchema = z.object({
  state: admission,
  serverId: z.number().int().positive().nullable(),
  keyFingerprint: fingerprint,
  masterPublicKey: z.string().max(1000),
  message: z.string().max(1000),
});
export type EnrollResponse = z.infer<typeof enrollResponseSchema>;

export const challengeResponseSchema = z.object({ challenge: z.string().max(200) });

/** Signed with the agent's key (header), over a challenge the master just gave. */
export const sessionRequestSchema = z.object({
  name: agentNameSchema,
  keyFingerprint: fingerprint,
  challenge: z.string().max(200),
  /** The agent's fresh X25519 public key (32 bytes, base64): the session key comes sealed for it. */
  exchangeKey: z.string().max(64),
});
export type SessionRequest = z.infer<typeof sessionRequestSchema>;

export const sessionResponseSchema = z.object({
  state: admission,
  serverId: z.number().int().positive().nullable(),
  token: z.string().max(200).nullable(),
  expiresInSeconds: z.number().int().nonnegative().nullable(),
  /** The master's X25519 half and the session key sealed with the exchange (session-crypto.ts). */
  exchangeKey: z.string().max(64).nullable(),
  sealedKey: z.string().max(200).nullable(),
  /** The master's clock (ms): calls of the session are stamped with it, whatever the agent's clock says. */
  serverTime: z.number().int().nonnegative().nullable(),
  message: z.string().max(1000),
});
export type SessionResponse = z.infer<typeof sessionResponseSchema>;

export const commandSchema = z.object({
  id: z.string().regex(/^[A-Za-z0-9-]{8,64}$/),
  type: z.enum(['propagate', 'apply']),
  package: z.object({ sha256, payloadSha256: sha256, manifestSha256: sha256, size: z.number().int().nonnegative(), product: productSchema, version, name: z.string().max(200) }),
  allowDowngrade: z.boolean(),
  /**
   * Seconds until the target's deadline when the master sent it (null: none). A duration, not a
   * date, so the slave's clock does not matter; the agent stops retrying a download then.
   */
  timeLeftSeconds: z.number().int().nonnegative().max(366 * 24 * 3600).nullable().optional(),
});
export type AgentCommand = z.infer<typeof commandSchema>;

/** running: accepted and under way; staged (propagate done); succeeded (apply done); failed. */
export const resultSchema = z.object({
  commandId: z.string().regex(/^[A-Za-z0-9-]{8,64}$/),
  state: z.enum(['running', 'staged', 'succeeded', 'failed']),
  message: z.string().max(8192),
  versionBefore: version.nullable(),
  versionAfter: version.nullable(),
  startedAt: instant,
  finishedAt: instant.nullable(),
});
export type CommandResult = z.infer<typeof resultSchema>;

export const reportRequestSchema = z.object({
  status: agentStatusSchema,
  results: z.array(resultSchema).max(1000),
  /** What the agent's clock read (ms) when it made the call: the master measures the offset. Older agents send none; a bad one is ignored. */
  agentTime: z.number().optional().catch(undefined),
});
export type ReportRequest = z.infer<typeof reportRequestSchema>;

export const reportResponseSchema = z.object({
  acknowledged: z.array(z.string()),
  commands: z.array(commandSchema),
  /** The master's wish for the next mailbox call; null: the agent's own schedule. */
  callAgainInSeconds: z.number().nonnegative().nullable(),
  /**
   * Packages this slave reports staged that the master no longer has (deleted): the agent drops
   * them. Under the answer's MAC like the rest; older masters send none.
   */
  drop: z.array(sha256).max(100).optional(),
});
export type ReportResponse = z.infer<typeof reportResponseSchema>;

export function isFinalResult(state: CommandResult['state']): boolean {
  return state !== 'running';
}
