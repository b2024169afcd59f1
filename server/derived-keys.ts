import { hkdfSync, type KeyObject } from 'node:crypto';

/**
 * Secrets the master needs beside its signing key (MAC keys for agent session tokens, login-form
 * tokens, known-device cookies) are derived from that key, one per purpose: there is one secret to
 * keep (DATA/master-key.pem, owner-only), and a key made for one purpose is worthless for another.
 */
export type KeyPurpose = 'agent-session' | 'agent-session-key' | 'login-form' | 'known-device' | 'enroll-challenge';

export function deriveKey(masterPrivateKey: KeyObject, purpose: KeyPurpose): Buffer {
  const material = masterPrivateKey.export({ type: 'pkcs8', format: 'der' });
  return Buffer.from(hkdfSync('sha256', material, 'propagator master', `propagator ${purpose} v1`, 32));
}
