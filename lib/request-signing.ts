import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';

/**
 * How the master authenticates its calls to a bidirectional agent. The master holds an Ed25519
 * key pair; each agent learns the public key when it enrolls. The master signs the timestamp,
 * method, path, body digest and the agent's id, so a signature is useless against another agent,
 * another route or another body, and stale after MAX_SKEW_MS. No shared secret is stored in clear
 * on either side.
 */
export const SIGNATURE_HEADER = 'x-propagator-signature';
export const TIMESTAMP_HEADER = 'x-propagator-timestamp';
export const MAX_SKEW_MS = 5 * 60_000;

export function generateSigningKey(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

function canonical(parts: { timestamp: string; method: string; path: string; body: Buffer | string; agentId: number }): Buffer {
  const digest = createHash('sha256').update(parts.body).digest('hex');
  return Buffer.from(`${parts.timestamp}\n${parts.method.toUpperCase()}\n${parts.path}\n${digest}\n${parts.agentId}`);
}

export function signRequest(privateKey: KeyObject | string, request: { method: string; path: string; body: Buffer | string; agentId: number }, now = Date.now()): Record<string, string> {
  const key = typeof privateKey === 'string' ? createPrivateKey(privateKey) : privateKey;
  const timestamp = String(now);
  const signature = sign(null, canonical({ ...request, timestamp }), key).toString('base64');
  return { [SIGNATURE_HEADER]: signature, [TIMESTAMP_HEADER]: timestamp };
}

/** Why a signed request is refused, or null when it is genuine and fresh. */
export function checkSignature(
  publicKey: KeyObject | string,
  request: { method: string; path: string; body: Buffer | string; agentId: number; signature: string | undefined; timestamp: string | undefined },
  now = Date.now(),
): string | null {
  if (!request.signature || !request.timestamp) return 'the request is not signed by the master';
  const when = Number(request.timestamp);
  if (!Number.isFinite(when) || Math.abs(now - when) > MAX_SKEW_MS) return 'the request signature is stale (check the clocks of master and slave)';
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  const ok = verify(null, canonical({ ...request, timestamp: request.timestamp }), key, Buffer.from(request.signature, 'base64'));
  return ok ? null : 'the request signature does not match the master key';
}
