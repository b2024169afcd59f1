import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { NONCE_HEADER } from './agent-keys.js';

/**
 * Everything the master says to an agent is signed with the master's Ed25519 key, which each agent
 * learns when it enrolls (or is given beforehand, --master-fingerprint):
 *
 * - bidirectional mode, the master's calls: signed over the timestamp, a nonce, the method, path,
 *   body digest and the agent's id, so a signature is useless against another agent, another route
 *   or another body, stale after MAX_SKEW_MS, and refused when replayed (the agent keeps the nonces
 *   it saw for that long);
 * - both modes, the answers to the agent's own calls: signed over the status, the route, the
 *   agent's identity (its key fingerprint), the nonce the agent sent with its request, and the body.
 *   The nonce is fresh for each call, so an answer cannot be replayed, and no clock is involved.
 *
 * A man in the middle of a plain-HTTP link can therefore drop messages, but not forge, alter or
 * replay one.
 */
export const SIGNATURE_HEADER = 'x-propagator-signature';
export const TIMESTAMP_HEADER = 'x-propagator-timestamp';
export const MAX_SKEW_MS = 5 * 60_000;

/**
 * A bidirectional agent's answers say what its clock reads (ms), and a refusal says why in a word
 * of REFUSAL_REASONS: the master reads these two headers and never the body, so it can tell "your
 * clock is 600 s ahead" from "unreachable" without taking any text from the agent.
 */
export const AGENT_TIME_HEADER = 'x-propagator-agent-time';
export const REFUSAL_HEADER = 'x-propagator-refusal';
export const REFUSAL_REASONS = ['clock', 'unsigned', 'signature', 'replay', 'not-accepted', 'malformed'] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** Why a call to an agent is refused: a reason for the master, and a sentence for people. */
export interface Refusal {
  reason: RefusalReason;
  message: string;
}

export function generateSigningKey(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

const digestOf = (body: Buffer | string) => createHash('sha256').update(body).digest('hex');

interface RequestParts {
  method: string;
  path: string;
  body: Buffer | string;
  agentId: number;
}

function canonicalRequest(parts: RequestParts & { timestamp: string; nonce: string }): Buffer {
  return Buffer.from(`propagator master request v2\n${parts.timestamp}\n${parts.nonce}\n${parts.method.toUpperCase()}\n${parts.path}\n${digestOf(parts.body)}\n${parts.agentId}`);
}

export function signRequest(privateKey: KeyObject | string, request: RequestParts & { nonce: string }, now = Date.now()): Record<string, string> {
  const key = typeof privateKey === 'string' ? createPrivateKey(privateKey) : privateKey;
  const timestamp = String(now);
  const signature = sign(null, canonicalRequest({ ...request, timestamp }), key).toString('base64');
  return { [SIGNATURE_HEADER]: signature, [TIMESTAMP_HEADER]: timestamp, [NONCE_HEADER]: request.nonce };
}

/** Whether a signed call's timestamp is within MAX_SKEW_MS of this clock; why not, otherwise. */
export function staleness(timestamp: string | undefined, now = Date.now()): Refusal | null {
  const when = Number(timestamp);
  if (Number.isFinite(when) && Math.abs(now - when) <= MAX_SKEW_MS) return null;
  return { reason: 'clock', message: 'the request signature is stale (check the clocks of master and slave)' };
}

/** Why a signed request is refused, or null when it is genuine and fresh (replays are the caller's to catch). */
export function checkSignature(
  publicKey: KeyObject | string,
  request: RequestParts & { signature: string | undefined; timestamp: string | undefined; nonce: string | undefined },
  now = Date.now(),
): Refusal | null {
  if (!request.signature || !request.timestamp || !request.nonce) return { reason: 'unsigned', message: 'the request is not signed by the master' };
  const stale = staleness(request.timestamp, now);
  if (stale) return stale;
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  const canonical = canonicalRequest({ ...request, timestamp: request.timestamp, nonce: request.nonce });
  const ok = (() => {
    try {
      return verify(null, canonical, key, Buffer.from(request.signature, 'base64'));
    } catch {
      return false;
    }
  })();
  return ok ? null : { reason: 'signature', message: 'the request signature does not match the master key' };
}

export interface AnswerParts {
  status: number;
  /** The route the agent called, e.g. "/api/agent/report". */
  path: string;
  /** The agent's key fingerprint. */
  agent: string;
  /** The nonce the agent sent with its request. */
  nonce: string;
  body: Buffer | string;
}

function canonicalAnswer(parts: AnswerParts): Buffer {
  return Buffer.from(`propagator master answer v1\n${parts.status}\n${parts.path}\n${parts.agent}\n${parts.nonce}\n${digestOf(parts.body)}`);
}

export function signAnswer(privateKey: KeyObject, parts: AnswerParts): string {
  return sign(null, canonicalAnswer(parts), privateKey).toString('base64');
}

export function answerSignatureMatches(publicKey: KeyObject, parts: AnswerParts, signature: string | undefined): boolean {
  if (!signature || signature.length > 200) return false;
  try {
    return verify(null, canonicalAnswer(parts), publicKey, Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}
