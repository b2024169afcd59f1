import { createCipheriv, createDecipheriv, createHmac, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';

/**
 * The key of an agent session. The master signs every session it opens (Ed25519, request-signing.ts)
 * and hands the agent a 256-bit session key inside that signed answer, sealed with an X25519
 * exchange the agent started (so a listener on the network never learns it). From then on each
 * call and each answer of the session carries an HMAC-SHA256 with that key, over the same fields a
 * signature would cover: a man in the middle can neither forge nor alter nor replay an answer, nor
 * use a session token it overheard. An HMAC costs the master a few microseconds where an Ed25519
 * signature per answer cost it about 80 (docs/PERFORMANCE.md).
 *
 * The master keeps no session table: the session key is an HMAC of the session token under a key
 * derived from the master key, so any master holding that key recomputes it.
 */
export const CALL_MAC_HEADER = 'x-propagator-mac';
/** The call's time on the master's clock (ms), under the call's MAC: a recorded call goes stale. */
export const CALL_TIME_HEADER = 'x-propagator-time';
export const ANSWER_MAC_HEADER = 'x-propagator-answer-mac';

/** One pass over the body: the HMAC covers the fields, then the body's exact bytes. */
function mac(key: Buffer, text: string, body: Buffer | string): string {
  return createHmac('sha256', key).update(text).update(body).digest('base64');
}

function sameMac(expected: string, given: string | undefined): boolean {
  if (!given || given.length !== expected.length) return false;
  return timingSafeEqual(Buffer.from(expected), Buffer.from(given));
}

export interface CallParts {
  method: string;
  /** The route, e.g. "/api/agent/report". */
  path: string;
  nonce: string;
  /** Milliseconds on the master's clock (the agent keeps the offset it learnt at session opening). */
  time: number;
  body: Buffer | string;
}

function callText(p: CallParts): string {
  return `propagator agent call v2\n${p.method.toUpperCase()}\n${p.path}\n${p.nonce}\n${p.time}\n${Buffer.byteLength(p.body)}\n`;
}

export function macCall(key: Buffer, parts: CallParts): string {
  return mac(key, callText(parts), parts.body);
}

export function callMacMatches(key: Buffer, parts: CallParts, given: string | undefined): boolean {
  return sameMac(macCall(key, parts), given);
}

export interface SessionAnswerParts {
  status: number;
  path: string;
  /** The agent's key fingerprint. */
  agent: string;
  nonce: string;
  body: Buffer | string;
}

function answerText(p: SessionAnswerParts): string {
  return `propagator master session answer v1\n${p.status}\n${p.path}\n${p.agent}\n${p.nonce}\n${Buffer.byteLength(p.body)}\n`;
}

export function macAnswer(key: Buffer, parts: SessionAnswerParts): string {
  return mac(key, answerText(parts), parts.body);
}

export function answerMacMatches(key: Buffer, parts: SessionAnswerParts, given: string | undefined): boolean {
  return sameMac(macAnswer(key, parts), given);
}

/** The agent's half of the exchange: a fresh X25519 key pair for one session opening. */
export function newExchange(): { privateKey: KeyObject; publicRaw: string } {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return { privateKey, publicRaw: der.subarray(der.length - 32).toString('base64') };
}

const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function x25519FromRaw(raw: string): KeyObject | null {
  const bytes = Buffer.from(raw, 'base64');
  if (bytes.length !== 32) return null;
  try {
    return createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, bytes]), format: 'der', type: 'spki' });
  } catch {
    return null;
  }
}

function wrapKey(shared: Buffer, token: string): Buffer {
  return Buffer.from(hkdfSync('sha256', shared, token, 'propagator session key wrap v1', 32));
}

/** The master seals the session key for the agent's exchange key; null when that key is not X25519. */
export function sealSessionKey(agentExchange: string, token: string, sessionKey: Buffer): { exchangeKey: string; sealedKey: string } | null {
  const agentPublic = x25519FromRaw(agentExchange);
  if (!agentPublic) return null;
  const mine = newExchange();
  const wrap = wrapKey(diffieHellman({ privateKey: mine.privateKey, publicKey: agentPublic }), token);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', wrap, iv);
  cipher.setAAD(Buffer.from(token));
  const sealed = Buffer.concat([iv, cipher.update(sessionKey), cipher.final(), cipher.getAuthTag()]);
  return { exchangeKey: mine.publicRaw, sealedKey: sealed.toString('base64') };
}

/** The agent opens the session key; null when it does not open (then the session is not used). */
export function openSessionKey(exchange: KeyObject, masterExchange: string, token: string, sealedKey: string): Buffer | null {
  const masterPublic = x25519FromRaw(masterExchange);
  const sealed = Buffer.from(sealedKey, 'base64');
  if (!masterPublic || sealed.length !== 12 + 32 + 16) return null;
  try {
    const wrap = wrapKey(diffieHellman({ privateKey: exchange, publicKey: masterPublic }), token);
    const decipher = createDecipheriv('aes-256-gcm', wrap, sealed.subarray(0, 12));
    decipher.setAAD(Buffer.from(token));
    decipher.setAuthTag(sealed.subarray(44));
    return Buffer.concat([decipher.update(sealed.subarray(12, 44)), decipher.final()]);
  } catch {
    return null;
  }
}
