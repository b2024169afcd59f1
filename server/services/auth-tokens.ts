import { createHash, createHmac, randomBytes } from 'node:crypto';
import { deriveKey } from '../derived-keys.js';
import type { MasterKey } from '../master-key.js';
import { safeEqual } from '../secrets.js';

export const LOGIN_FORM_MS = 60 * 60_000;
export const KNOWN_DEVICE_MS = 30 * 24 * 3600_000;

const mac = (key: Buffer, text: string) => createHmac('sha256', key).update(text).digest('base64url');

/** "1790000000000" → the number, or null for anything else (no exponent, no sign, no Infinity). */
function instant(text: string | undefined): number | null {
  return text !== undefined && /^\d{13,15}$/.test(text) ? Number(text) : null;
}

/**
 * Values the master gives browsers and checks later without storing anything: the login form's
 * CSRF token, and the "known device" cookie. Each is a MAC under a key derived from the master key
 * for that purpose alone, with its expiry inside what is signed.
 */
export class AuthTokens {
  private keys: Promise<{ loginForm: Buffer; knownDevice: Buffer }> | null = null;

  constructor(private readonly masterKey: () => Promise<MasterKey>) {}

  private load() {
    return (this.keys ??= this.masterKey().then(({ privateKey }) => ({
      loginForm: deriveKey(privateKey, 'login-form'),
      knownDevice: deriveKey(privateKey, 'known-device'),
    })));
  }

  /** The random value of the login form's cookie. */
  newLoginNonce(): string {
    return randomBytes(24).toString('base64url');
  }

  isLoginNonce(value: unknown): value is string {
    return typeof value === 'string' && /^[A-Za-z0-9_-]{32}$/.test(value);
  }

  /** The form's token: worth something only beside the cookie it was made for, for an hour. */
  async loginFormToken(nonce: string, now = Date.now()): Promise<string> {
    const expires = now + LOGIN_FORM_MS;
    return `${expires}.${mac((await this.load()).loginForm, `${nonce}.${expires}`)}`;
  }

  async checkLoginFormToken(nonce: unknown, token: unknown, now = Date.now()): Promise<boolean> {
    if (!this.isLoginNonce(nonce) || typeof token !== 'string' || token.length > 100) return false;
    const [expiresText, sent] = token.split('.');
    const expires = instant(expiresText);
    if (expires === null || sent === undefined || expires <= now || expires > now + LOGIN_FORM_MS) return false;
    return safeEqual(sent, mac((await this.load()).loginForm, `${nonce}.${expires}`));
  }

  /**
   * The cookie of a browser that logged in as `user`. It names the current password (through a
   * digest of its hash) so a password change makes every known device a stranger again.
   */
  async knownDeviceCookie(user: string, passwordHash: string, now = Date.now()): Promise<string> {
    const expires = now + KNOWN_DEVICE_MS;
    const name = Buffer.from(user).toString('base64url');
    return `${name}.${expires}.${mac((await this.load()).knownDevice, `${user}\n${expires}\n${digest(passwordHash)}`)}`;
  }

  async isKnownDevice(cookie: unknown, user: string, passwordHash: string, now = Date.now()): Promise<boolean> {
    if (typeof cookie !== 'string' || cookie.length > 400) return false;
    const [name, expiresText, sent] = cookie.split('.');
    const expires = instant(expiresText);
    if (name !== Buffer.from(user).toString('base64url') || expires === null || sent === undefined || expires <= now) return false;
    return safeEqual(sent, mac((await this.load()).knownDevice, `${user}\n${expires}\n${digest(passwordHash)}`));
  }
}

function digest(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
