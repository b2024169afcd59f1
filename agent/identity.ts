import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { generateAgentKey, keyFingerprint } from '../lib/agent-keys.js';
import { readJson, writeJsonAtomic } from './files.js';

/** The agent's own key pair, DATA/agent-key.pem (owner-only): who this agent is, to the master. */
export interface AgentKey {
  privateKey: KeyObject;
  publicPem: string;
  fingerprint: string;
}

/** What enrollment gave this agent; kept owner-only in DATA/identity.json. */
export interface Identity {
  name: string;
  masterUrl: string;
  /** The master's Ed25519 public key: everything the master says must be signed with it. */
  masterPublicKey: string;
  /** This agent's key fingerprint, as the administrator saw it when accepting the server. */
  keyFingerprint: string;
  /** Null until the administrator accepts the server. */
  serverId: number | null;
  state: 'pending' | 'accepted';
  enrolledAt: string;
}

export const identityFile = (dataDir: string) => path.join(dataDir, 'identity.json');
const keyFile = (dataDir: string) => path.join(dataDir, 'agent-key.pem');

/** Reads the agent's key, making it at the first start. */
export async function loadAgentKey(dataDir: string): Promise<AgentKey & { created: boolean }> {
  let pem: string;
  let created = false;
  try {
    pem = await readFile(keyFile(dataDir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    pem = generateAgentKey().privatePem;
    // 'wx': two starts racing keep one key, the first written.
    await writeFile(keyFile(dataDir), pem, { mode: 0o600, flag: 'wx' }).then(() => {
      created = true;
    }, async () => {
      pem = await readFile(keyFile(dataDir), 'utf8');
    });
  }
  const privateKey = createPrivateKey(pem);
  const publicKey = createPublicKey(privateKey);
  return { privateKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(), fingerprint: keyFingerprint(publicKey), created };
}

/**
 * The saved identity, or null when there is none. An identity from before agents had keys (it held
 * a shared secret) is not one: such an agent enrolls again.
 */
export async function loadIdentity(dataDir: string): Promise<{ identity: Identity | null; legacy: boolean }> {
  const saved = await readJson<Partial<Identity> & { secret?: string }>(identityFile(dataDir));
  if (!saved) return { identity: null, legacy: false };
  if (typeof saved.keyFingerprint !== 'string' || typeof saved.masterPublicKey !== 'string') return { identity: null, legacy: true };
  return { identity: saved as Identity, legacy: false };
}

export function saveIdentity(dataDir: string, identity: Identity): Promise<void> {
  return writeJsonAtomic(identityFile(dataDir), identity, 0o600);
}
