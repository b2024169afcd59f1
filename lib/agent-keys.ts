import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from 'node:crypto';

/**
 * Who an agent is: an Ed25519 key pair it makes at its first start and never sends but the public
 * half. The master stores that public key when the administrator accepts the server; from then on
 * only the holder of the private key can open a session as that server, so a leaked enrollment
 * token alone gives access to nothing.
 */
export const AGENT_SIGNATURE_HEADER = 'x-propagator-agent-signature';
export const NONCE_HEADER = 'x-propagator-nonce';
/** Every agent call names the agent's key (its fingerprint): answers are bound to it. */
export const AGENT_KEY_HEADER = 'x-propagator-agent-key';
export const FINGERPRINT_PATTERN = /^SHA256:[A-Za-z0-9+/]{43}$/;

export function generateAgentKey(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** Reads an Ed25519 public key (SPKI PEM); null when the text is not one. */
export function parseAgentPublicKey(pem: string): KeyObject | null {
  try {
    const key = createPublicKey(pem);
    return key.asymmetricKeyType === 'ed25519' ? key : null;
  } catch {
    return null;
  }
}

/** "SHA256:<base64>" of the key's DER encoding, as administrators compare it (like ssh-keygen -l). */
export function keyFingerprint(publicKey: KeyObject | string): string {
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  const der = key.export({ type: 'spki', format: 'der' });
  return `SHA256:${createHash('sha256').update(der).digest('base64').replace(/=+$/, '')}`;
}

/** 128 random bits, base64url: what makes each request and its answer one of a kind. */
export function newNonce(): string {
  return randomBytes(16).toString('base64url');
}

export const NONCE_PATTERN = /^[A-Za-z0-9_-]{16,64}$/;

function requestBytes(parts: { method: string; path: string; nonce: string; body: Buffer | string }): Buffer {
  const digest = createHash('sha256').update(parts.body).digest('hex');
  return Buffer.from(`propagator agent request v1\n${parts.method.toUpperCase()}\n${parts.path}\n${parts.nonce}\n${digest}`);
}

/** The agent's proof that it holds its key, over one request (enrollment, session). */
export function signAgentRequest(privateKey: KeyObject | string, parts: { method: string; path: string; nonce: string; body: Buffer | string }): string {
  const key = typeof privateKey === 'string' ? createPrivateKey(privateKey) : privateKey;
  return sign(null, requestBytes(parts), key).toString('base64');
}

export function agentRequestSignatureMatches(publicKey: KeyObject, parts: { method: string; path: string; nonce: string; body: Buffer | string }, signature: string | undefined): boolean {
  if (!signature || signature.length > 200) return false;
  try {
    return verify(null, requestBytes(parts), publicKey, Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}
