import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { generateSigningKey } from '../lib/request-signing.js';
import type { SettingsRepo } from './db/settings-repo.js';

export interface MasterKey {
  privateKey: KeyObject;
  publicPem: string;
}

/** The master's Ed25519 key, made at first start in DATA/master-key.pem (owner-only). */
export async function loadMasterKey(dataDir: string): Promise<MasterKey> {
  const file = path.join(dataDir, 'master-key.pem');
  let pem: string;
  try {
    pem = await readFile(file, 'utf8');
  } catch {
    pem = generateSigningKey().privatePem;
    await writeFile(file, pem, { mode: 0o600, flag: 'wx' }).catch(async () => {
      pem = await readFile(file, 'utf8');
    });
  }
  return fromPem(pem);
}

function fromPem(pem: string): MasterKey {
  const privateKey = createPrivateKey(pem);
  return { privateKey, publicPem: createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }).toString() };
}

/**
 * The key of several masters on one PostgreSQL database, kept in that database (settings
 * master_private_key), so every master signs as the same master and checks what another issued.
 * The first master to start brings the key of its data folder, if it has one (a master moved from
 * SQLite keeps the fingerprint its agents pinned), or makes one; the others take that one.
 */
export async function loadSharedMasterKey(settings: SettingsRepo, dataDir: string): Promise<MasterKey> {
  let pem = await settings.get('master_private_key');
  if (pem === null) {
    const local = await readFile(path.join(dataDir, 'master-key.pem'), 'utf8').catch(() => null);
    await settings.insertIfAbsent('master_private_key', local ?? generateSigningKey().privatePem);
    pem = (await settings.get('master_private_key')) as string;
  }
  return fromPem(pem);
}
