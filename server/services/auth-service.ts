import { createHash } from 'node:crypto';
import type { SessionsRepo } from '../db/sessions-repo.js';
import type { SettingsRepo } from '../db/settings-repo.js';
import type { Session } from '../domain.js';
import type { Logger } from '../../lib/logger.js';
import { hashPassword, randomToken, safeEqual, verifyPassword } from '../secrets.js';

export const ADMIN_USER = 'admin';
const SESSION_HOURS = 12;
const BASIC_CACHE_MS = 5 * 60_000;

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * The administrator account and browser sessions. The session cookie holds a random id; the
 * database keeps only its SHA-256, so a copy of the database opens no session.
 */
export class AuthService {
  /** Basic credentials recently checked with scrypt, by digest, so API clients do not pay it each call. */
  private readonly basicCache = new Map<string, number>();

  constructor(private readonly settings: SettingsRepo, private readonly sessions: SessionsRepo, private readonly log: Logger) {}

  /** Sets the admin password from the environment, or generates one on first start (returned once). */
  async bootstrap(envPassword: string | null): Promise<{ generatedPassword: string | null }> {
    const stored = await this.settings.get('admin_password_hash');
    if (envPassword !== null) {
      if (stored === null || !(await verifyPassword(envPassword, stored))) {
        await this.settings.set('admin_password_hash', await hashPassword(envPassword));
        this.log.info('admin password set from PROPAGATOR_ADMIN_PASSWORD');
      }
      return { generatedPassword: null };
    }
    if (stored !== null) return { generatedPassword: null };
    const generated = randomToken(15);
    await this.settings.set('admin_password_hash', await hashPassword(generated));
    this.log.info('admin password generated (printed once on the console)');
    return { generatedPassword: generated };
  }

  async checkPassword(username: string, password: string): Promise<boolean> {
    const stored = await this.settings.get('admin_password_hash');
    if (stored === null || password.length > 1024) return false;
    const ok = await verifyPassword(password, stored);
    return ok && safeEqual(username, ADMIN_USER);
  }

  async changePassword(current: string, next: string): Promise<boolean> {
    if (!(await this.checkPassword(ADMIN_USER, current))) return false;
    await this.settings.set('admin_password_hash', await hashPassword(next));
    this.basicCache.clear();
    this.log.info('admin password changed', { user: ADMIN_USER });
    return true;
  }

  /** "Basic base64(user:password)" → the user name, or null. */
  async checkBasic(header: string): Promise<string | null> {
    const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
    if (!match?.[1]) return null;
    const decoded = Buffer.from(match[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return null;
    const username = decoded.slice(0, colon);
    const digest = sha256(`${await this.settings.get('admin_password_hash')}\n${decoded}`);
    const cached = this.basicCache.get(digest);
    if (cached !== undefined && cached > Date.now()) return username;
    if (!(await this.checkPassword(username, decoded.slice(colon + 1)))) return null;
    if (this.basicCache.size > 1000) this.basicCache.clear();
    this.basicCache.set(digest, Date.now() + BASIC_CACHE_MS);
    return username;
  }

  /** A new session (anonymous before login, so the login form has a CSRF token too). */
  async createSession(username: string | null): Promise<{ id: string; session: Session }> {
    const id = randomToken(32);
    const now = new Date();
    const session: Session = {
      idHash: sha256(id),
      csrfToken: randomToken(24),
      username,
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + SESSION_HOURS * 3600_000).toISOString(),
    };
    // Every visit to the login page makes a session (for its CSRF token): expired ones go as new
    // ones come, so a master that runs for months, probed by monitoring, keeps a small table.
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
