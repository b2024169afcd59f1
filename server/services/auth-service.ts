import { createHash } from 'node:crypto';
import type { SessionsRepo } from '../db/sessions-repo.js';
import type { SettingsRepo } from '../db/settings-repo.js';
import type { Session } from '../domain.js';
import type { Logger } from '../../lib/logger.js';
import type { MasterKey } from '../master-key.js';
import { hashPassword, randomToken, safeEqual, verifyPassword } from '../secrets.js';
import { AuthTokens } from './auth-tokens.js';
import { LoginThrottle, type AttemptKind, type AttemptTicket, type ThrottleLimits } from './login-throttle.js';

export const ADMIN_USER = 'admin';
const SESSION_HOURS = 12;
const BASIC_CACHE_MS = 5 * 60_000;

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** Who is trying: the address, and the known-device cookie its browser showed (if any). */
export interface Client {
  ip: string;
  deviceCookie: unknown;
}

export interface AuthOptions {
  masterKey: () => Promise<MasterKey>;
  limits: ThrottleLimits;
}

/**
 * The administrator account and browser sessions. The session cookie holds a random id; the
 * database keeps only its SHA-256, so a copy of the database opens no session. Every password
 * check goes through the throttle, and a session row exists only for someone who logged in.
 */
export class AuthService {
  readonly tokens: AuthTokens;
  private readonly throttle: LoginThrottle;
  /** Basic credentials recently checked with scrypt, by digest, so API clients do not pay it each call. */
  private readonly basicCache = new Map<string, number>();
  /** Basic checks under way, by digest: the same credentials sent at once are checked once. */
  private readonly basicChecks = new Map<string, Promise<boolean>>();

  constructor(private readonly settings: SettingsRepo, private readonly sessions: SessionsRepo, private readonly log: Logger, options: AuthOptions) {
    this.tokens = new AuthTokens(options.masterKey);
    this.throttle = new LoginThrottle(options.limits);
  }

  /** Sets the admin password from the environment, or generates one on first start (returned once). */
  async bootstrap(envPassword: string | null): Promise<{ generatedPassword: string | null }> {
    const stored = await this.settings.get('admin_password_hash');
    if (envPassword !== null) {
      if (stored === null || !(await verifyPassword(envPassword, stored))) {
        await this.settings.set('admin_password_hash', await hashPassword(envPassword));
        const endedSessions = await this.sessions.deleteForUser(ADMIN_USER, null);
        this.log.info('admin password set from PROPAGATOR_ADMIN_PASSWORD', { endedSessions });
      }
      return { generatedPassword: null };
    }
    if (stored !== null) return { generatedPassword: null };
    const generated = randomToken(15);
    // Masters starting together on a new database: the password of the one that stored it first is the password.
    if (!(await this.settings.insertIfAbsent('admin_password_hash', await hashPassword(generated)))) return { generatedPassword: null };
    this.log.info('admin password generated (printed once on the console)');
    return { generatedPassword: generated };
  }

  /** Whether the name is an account's (only then may it appear in logs: people type passwords there). */
  isKnownUser(username: string): boolean {
    return safeEqual(username, ADMIN_USER);
  }

  private async checkPassword(username: string, password: string): Promise<boolean> {
    const stored = await this.settings.get('admin_password_hash');
    if (stored === null || password.length > 1024) return false;
    const ok = await verifyPassword(password, stored);
    return ok && this.isKnownUser(username);
  }

  /** Runs one password check within the limits (429 beyond them); logs a failure without the secret. */
  private async attempt(kind: AttemptKind, username: string, client: Client, check: () => Promise<boolean>): Promise<boolean> {
    const user = this.isKnownUser(username) ? ADMIN_USER : null;
    const stored = await this.settings.get('admin_password_hash');
    const knownDevice = user !== null && stored !== null && (await this.tokens.isKnownDevice(client.deviceCookie, user, stored));
    const ticket: AttemptTicket = this.throttle.begin({ kind, ip: client.ip, user, knownDevice });
    let ok: boolean;
    try {
      ok = await check();
    } catch (err) {
      ticket.abandoned();
      throw err;
    }
    if (ok) {
      ticket.succeeded();
      return true;
    }
    ticket.failed();
    const what = kind === 'login' ? 'login failed' : 'HTTP Basic authentication failed';
    if (user === null) this.log.warn(`${what}: unknown user name (not logged)`, { ip: client.ip });
    else this.log.warn(`${what}: wrong password`, { user, ip: client.ip });
    return false;
  }

  /** The login form: the user and a known-device cookie for the browser, or null for wrong credentials. */
  async login(username: string, password: string, client: Client): Promise<{ user: string; deviceCookie: string } | null> {
    if (!(await this.attempt('login', username, client, () => this.checkPassword(username, password)))) return null;
    const stored = await this.settings.get('admin_password_hash');
    return { user: ADMIN_USER, deviceCookie: await this.tokens.knownDeviceCookie(ADMIN_USER, stored ?? '') };
  }

  /** Changes the password (the current one is a password check like a login) and ends every other session. */
  async changePassword(current: string, next: string, client: Client & { keepSessionId: string | undefined }): Promise<boolean> {
    if (!(await this.attempt('login', ADMIN_USER, client, () => this.checkPassword(ADMIN_USER, current)))) return false;
    await this.settings.set('admin_password_hash', await hashPassword(next));
    this.basicCache.clear();
    this.throttle.forgetUser(ADMIN_USER);
    const endedSessions = await this.sessions.deleteForUser(ADMIN_USER, client.keepSessionId ? sha256(client.keepSessionId) : null);
    this.log.info('admin password changed', { user: ADMIN_USER, endedSessions });
    return true;
  }

  /** "Basic base64(user:password)" → the user name, or null. */
  async checkBasic(header: string, client: Client): Promise<string | null> {
    const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
    if (!match?.[1]) return null;
    const decoded = Buffer.from(match[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return null;
    const username = decoded.slice(0, colon);
    const digest = sha256(`${await this.settings.get('admin_password_hash')}\n${decoded}`);
    const cached = this.basicCache.get(digest);
    if (cached !== undefined && cached > Date.now()) {
      this.throttle.remember(username, client.ip);
      return username;
    }
    let check = this.basicChecks.get(digest);
    if (!check) {
      check = this.attempt('basic', username, client, () => this.checkPassword(username, decoded.slice(colon + 1)))
        .finally(() => this.basicChecks.delete(digest));
      this.basicChecks.set(digest, check);
    }
    if (!(await check)) return null;
    if (this.basicCache.size > 1000) this.basicCache.clear();
    this.basicCache.set(digest, Date.now() + BASIC_CACHE_MS);
    return username;
  }

  /** A session for a user who just logged in. */
  async createSession(username: string): Promise<{ id: string; session: Session }> {
    const id = randomToken(32);
    const now = new Date();
    const session: Session = {
      idHash: sha256(id),
      csrfToken: randomToken(24),
      username,
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + SESSION_HOURS * 3600_000).toISOString(),
    };
    // Expired sessions go as new ones come, so a master that runs for months keeps a small table.
    await this.sessions.deleteExpired(session.createdAt);
    await this.sessions.insert(session);
    return { id, session };
  }

  async findSession(id: string | undefined): Promise<Session | null> {
    if (!id || id.length > 200) return null;
    return this.sessions.find(sha256(id), new Date().toISOString());
  }

  async destroySession(id: string | undefined): Promise<void> {
    if (id) await this.sessions.delete(sha256(id));
  }

  async purgeExpiredSessions(): Promise<number> {
    return this.sessions.deleteExpired(new Date().toISOString());
  }
}
