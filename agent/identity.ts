import path from 'node:path';
import { readJson, writeJsonAtomic } from './files.js';

/** What enrollment gave this agent; kept owner-only in DATA/identity.json. */
export interface Identity {
  serverId: number;
  secret: string;
  masterPublicKey: string;
  name: string;
  masterUrl: string;
  enrolledAt: string;
}

export const identityFile = (dataDir: string) => path.join(dataDir, 'identity.json');

export function loadIdentity(dataDir: string): Promise<Identity | null> {
  return readJson<Identity>(identityFile(dataDir));
}

export function saveIdentity(dataDir: string, identity: Identity): Promise<void> {
  return writeJsonAtomic(identityFile(dataDir), identity, 0o600);
}

export function bearer(identity: Identity): string {
  return `Bearer ${identity.serverId}.${identity.secret}`;
}
