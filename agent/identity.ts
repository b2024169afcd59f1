import { createPrivateKey, createPublicKey, randomUUID, type KeyObject } from 'node:crypto';
import { link, open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { FINGERPRINT_PATTERN, generateAgentKey, keyFingerprint, parseAgentPublicKey } from '../lib/agent-keys.js';
import { ConfigurationError } from '../lib/errors.js';
import { writeJsonAtomic } from './files.js';

/** The agent's own key pair, DATA/agent-key.pem (owner-only): who this agent is, to the master. */
export interface AgentKey {
  privateKey: KeyObject;
  publicPem: string;
  fingerprint: string;
}

const identitySchema = z.object({
  name: z.string().min(1),
  masterUrl: z.string().min(1),
  /** The master's Ed25519 public key: everything the master says must be signed with it. */
  masterPublicKey: z.string().refine((pem) => parseAgentPublicKey(pem) !== null, { error: 'masterPublicKey is not an Ed25519 public key (PEM)' }),
  /** This agent's key fingerprint, as the administrator saw it when accepting the server. */
  keyFingerprint: z.string().regex(FINGERPRINT_PATTERN, { error: 'keyFingerprint is not a key fingerprint (SHA256:…)' }),
  /** Null until the administrator accepts the server. */
  serverId: z.number().int().positive().nullable(),
  state: z.enum(['pending', 'accepted'], { error: 'state should be "pending" or "accepted"' }),
  enrolledAt: z.string(),
});

/** What enrollment gave this agent; kept owner-only in DATA/identity.json. */
export type Identity = z.infer<typeof identitySchema>;

export const identityFile = (dataDir: string) => path.join(dataDir, 'identity.json');
const keyFile = (dataDir: string) => path.join(dataDir, 'agent-key.pem');

const IDENTITY_REMEDY = 'restore it from a backup, or remove it and enroll this server again with an enrollment token (PROPAGATOR_ENROLL_TOKEN or --enroll-token-file)';
const KEY_REMEDY = 'enroll this server again with an enrollment token; the administrator accepts its new key in New servers';

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/** The first thing wrong with the file's content, in words. */
function describeProblem(issue: z.core.$ZodIssue): string {
  const field = issue.path.join('.');
  if (issue.code === 'invalid_type') {
    if (!field) return `it should hold an object, not ${kindOf(issue.input)}`;
    if (issue.input === undefined) return `${field} is missing`;
    return `${field} should be a ${issue.expected}${field === 'serverId' ? ' or null' : ''}, not ${kindOf(issue.input)}`;
  }
  return issue.code === 'custom' || issue.code === 'invalid_value' || issue.code === 'invalid_format' ? issue.message : `${field}: ${issue.message}`;
}

/** Reads the agent's key, making it at the first start (only then: `create`). */
export async function loadAgentKey(dataDir: string, options: { create: boolean; expected?: string } = { create: true }): Promise<AgentKey & { created: boolean }> {
  const file = keyFile(dataDir);
  let pem = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw new ConfigurationError(`cannot read ${file} (${err.code ?? err.message})`);
    return null;
  });
  let created = false;
  if (pem === null) {
    if (!options.create) {
      throw new ConfigurationError(`${file} is missing, though identity.json says this server enrolled with the key ${options.expected ?? '(unknown)'}: restore it from a backup, or remove identity.json and ${KEY_REMEDY}`);
    }
    const fresh = generateAgentKey().privatePem;
    // Written whole under another name, then linked into place: a crash leaves no half key, and of
    // two starts racing (link fails on an existing name) the first key stays.
    const tmp = `${file}.${randomUUID()}.tmp`;
    const handle = await open(tmp, 'wx', 0o600);
    try {
      await handle.writeFile(fresh);
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await link(tmp, file);
      pem = fresh;
      created = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      pem = await readFile(file, 'utf8');
    } finally {
      await rm(tmp, { force: true });
    }
  }
  const damaged = (reason: string) => new ConfigurationError(`${file} is damaged (${reason}): restore it from a backup, or remove it and identity.json and ${KEY_REMEDY}`);
  if (pem.trim() === '') throw damaged('the file is empty');
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch {
    throw damaged('not a private key in PEM');
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw damaged(`an ${privateKey.asymmetricKeyType ?? 'unknown'} key, not Ed25519`);
  const publicKey = createPublicKey(privateKey);
  const fingerprint = keyFingerprint(publicKey);
  if (options.expected && options.expected !== fingerprint) {
    throw new ConfigurationError(`${file} is not the key this server enrolled with (identity.json names ${options.expected}, the file holds ${fingerprint}): restore the key from a backup, or remove it and identity.json and ${KEY_REMEDY}`);
  }
  return { privateKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(), fingerprint, created };
}

/**
 * The saved identity, or null when there is none. An identity from before agents had keys (it held
 * a shared secret) is not one: such an agent enrolls again. A damaged file stops the agent with
 * what to do: running on would mean running as no server, or enrolling a second time.
 */
export async function loadIdentity(dataDir: string): Promise<{ identity: Identity | null; legacy: boolean }> {
  const file = identityFile(dataDir);
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw new ConfigurationError(`cannot read ${file} (${err.code ?? err.message})`);
    return null;
  });
  if (text === null) return { identity: null, legacy: false };
  let saved: unknown;
  try {
    saved = JSON.parse(text);
  } catch (err) {
    throw new ConfigurationError(`${file} is damaged (it is not JSON: ${(err as Error).message}): ${IDENTITY_REMEDY}`);
  }
  const fields = typeof saved === 'object' && saved !== null ? saved as Record<string, unknown> : {};
  if (typeof fields.secret === 'string' && fields.keyFingerprint === undefined) return { identity: null, legacy: true };
  const parsed = identitySchema.safeParse(saved, { reportInput: true });
  if (!parsed.success) {
    throw new ConfigurationError(`${file} is damaged (${parsed.error.issues[0] ? describeProblem(parsed.error.issues[0]) : 'unreadable'}): ${IDENTITY_REMEDY}`);
  }
  return { identity: parsed.data, legacy: false };
}

export function saveIdentity(dataDir: string, identity: Identity): Promise<void> {
  return writeJsonAtomic(identityFile(dataDir), identity, 0o600);
}
