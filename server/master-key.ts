import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { generateSigningKey } from '../lib/request-signing.js';

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
  const privateKey = createPrivateKey(pem);
  return { privateKey, publicPem: createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }).toString() };
}
