import { createHmac, randomBytes } from 'node:crypto';
import { MemorySpentSet, type SpentSet } from './cluster/spent-set.js';
import { safeEqual } from './secrets.js';

/**
 * Agent sessions without a session table. An agent proves it holds its key by signing a challenge
 * the master made a moment ago; it then gets a token, valid an hour, that it sends with each call.
 * Challenges and tokens carry their own MAC (keys derived from the master key), so checking one
 * costs an HMAC, not a database read or a signature verification, and any master holding the key
 * can check them. A token names the key it was issued to: once the server's key changes (the
 * administrator accepted a new one) or the server is removed, its old tokens are worthless.
 */
export const SESSION_SECONDS = 3600;
export const CHALLENGE_SECONDS = 120;
export const CHALLENGE_TTL_MS = (CHALLENGE_SECONDS + 1) * 1000;

function mac(key: Buffer, text: string): string {
  return createHmac('sha256', key).update(text).digest('base64url');
}


export interface SessionToken {
  serverId: number;
  expires: number;
  mac: string;
}

export class AgentSessions {
  constructor(
    private readonly tokenKey: Buffer,
    private readonly challengeKey: Buffer,
    private readonly sessionKeyKey: Buffer,
    /** Challenges used, by their random part, until they would have expired anyway. */
    private readonly spent: SpentSet = new MemorySpentSet(CHALLENGE_TTL_MS, 200_000),
  ) {}

  /** The session's own key (session-crypto.ts), recomputed from its token on every call. */
  sessionKey(token: string): Buffer {
    return createHmac('sha256', this.sessionKeyKey).update(`propagator session key v1\n${token}`).digest();
  }

  /** "<unix seconds>.<random>.<mac>": the master's own clock decides its age; the agent's never matters. */
  challenge(now = Date.now()): string {
    const body = `${Math.floor(now / 1000)}.${randomBytes(12).toString('base64url')}`;
    return `${body}.${mac(this.challengeKey, body)}`;
  }

  /**
   * Whether a challenge was made here less than CHALLENGE_SECONDS ago and not used yet; using it
   * spends it, so a recorded session opening cannot be played again (bounded memory: a challenge
   * is remembered only for its lifetime).
   */
  async spendChallenge(challenge: string, now = Date.now()): Promise<boolean> {
    const match = /^(\d{1,12})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{43})$/.exec(challenge);
    if (!match) return false;
    const age = Math.floor(now / 1000) - Number(match[1]);
    if (age < 0 || age > CHALLENGE_SECONDS || !safeEqual(match[3] as string, mac(this.challengeKey, `${match[1]}.${match[2]}`))) return false;
    return this.spent.add(match[2] as string, now);
  }

  /** "<serverId>.<expiry>.<mac over id, expiry and key fingerprint>". */
  issue(serverId: number, keyFingerprint: string, now = Date.now()): { token: string; expiresInSeconds: number } {
    const expires = Math.floor(now / 1000) + SESSION_SECONDS;
    return { token: `${serverId}.${expires}.${mac(this.tokenKey, `${serverId}.${expires}.${keyFingerprint}`)}`, expiresInSeconds: SESSION_SECONDS };
  }

  /** Parses "Bearer <token>"; null when it is not shaped like one. */
  static read(header: string | undefined): (SessionToken & { text: string }) | null {
    const match = /^Bearer ((\d{1,12})\.(\d{1,12})\.([A-Za-z0-9_-]{43}))$/.exec(header ?? '');
    return match ? { text: match[1] as string, serverId: Number(match[2]), expires: Number(match[3]), mac: match[4] as string } : null;
  }

  /** 'ok', or why the token is refused. */
  check(token: SessionToken, keyFingerprint: string, now = Date.now()): 'ok' | 'expired' | 'invalid' {
    if (!safeEqual(token.mac, mac(this.tokenKey, `${token.serverId}.${token.expires}.${keyFingerprint}`))) return 'invalid';
    return token.expires * 1000 <= now ? 'expired' : 'ok';
  }
}
