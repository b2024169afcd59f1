import { TooManyRequestsError } from '../errors.js';

export interface ThrottleLimits {
  windowMs: number;
  /** Password checks from the login form allowed per address per window, failures and checks under way. */
  loginsPerAddress: number;
  /** The same for HTTP Basic credentials (scripts retry more than people do). */
  basicPerAddress: number;
  /** The same per user name, all addresses together (guessing spread over many addresses). */
  perUser: number;
}

export type AttemptKind = 'login' | 'basic';

export interface Attempt {
  kind: AttemptKind;
  ip: string;
  /** The user name when it names an account (unknown names have no account to protect). */
  user: string | null;
  /** The browser showed a valid known-device cookie for this user. */
  knownDevice: boolean;
}

/** The slots one password check holds; it must end in exactly one of these. */
export interface AttemptTicket {
  succeeded(): void;
  failed(): void;
  /** The check could not run (an error): it tells the guesser nothing, so it costs nothing. */
  abandoned(): void;
}

/** An address that logged in as a user keeps that user's trust this long (per-user limit waived). */
const RECENT_SUCCESS_MS = 24 * 3600_000;
const MAX_KEYS = 10_000;
const MAX_RECENT = 1000;

interface Slots {
  used: number;
  resetAt: number;
}

/** Slots per key in fixed windows; the oldest keys go first when the map is full. */
class AttemptWindow {
  private readonly slots = new Map<string, Slots>();

  constructor(readonly limit: number, readonly windowMs: number) {}

  /** Seconds before this key may try again; 0 when a slot is free now. */
  waitSeconds(key: string, now: number): number {
    const entry = this.slots.get(key);
    if (!entry || entry.resetAt <= now || entry.used < this.limit) return 0;
    return Math.max(1, Math.ceil((entry.resetAt - now) / 1000));
  }

  take(key: string, now: number): Slots {
    let entry = this.slots.get(key);
    if (!entry || entry.resetAt <= now) {
      this.slots.delete(key);
      if (this.slots.size >= MAX_KEYS) this.evict(now);
      entry = { used: 0, resetAt: now + this.windowMs };
      this.slots.set(key, entry);
    }
    entry.used++;
    return entry;
  }

  private evict(now: number): void {
    for (const [key, entry] of this.slots) if (entry.resetAt <= now) this.slots.delete(key);
    for (const key of this.slots.keys()) {
      if (this.slots.size < MAX_KEYS) break;
      this.slots.delete(key);
    }
  }
}

/**
 * The key of an address: IPv4 as is, IPv6 by its /64 network (one subscriber commonly holds a
 * whole /64, so single IPv6 addresses cost a guesser nothing).
 */
export function addressKey(ip: string): string {
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (v4?.[1]) return v4[1];
  if (!ip.includes(':')) return ip;
  const [head = '', tail] = (ip.split('%')[0] ?? '').toLowerCase().split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

const minutes = (seconds: number) => {
  const m = Math.ceil(seconds / 60);
  return m === 1 ? '1 minute' : `${m} minutes`;
};

/**
 * Limits password checks, counted when they start: a check takes a slot before the password is
 * looked at and a success gives it back, so however many guesses arrive at once, at most `limit`
 * are ever checked per window. Per address, and per user name across all addresses, except for a
 * client that proved itself for that user (OWASP's "device cookie"): a browser with a valid
 * known-device cookie, or an address that logged in as that user recently. So neither a guesser
 * spread over many addresses nor a stranger locking the account out stops the real admin.
 */
export class LoginThrottle {
  private readonly byAddress: Record<AttemptKind, AttemptWindow>;
  private readonly byUser: AttemptWindow;
  private readonly recent = new Map<string, number>();

  constructor(private readonly limits: ThrottleLimits) {
    this.byAddress = { login: new AttemptWindow(limits.loginsPerAddress, limits.windowMs), basic: new AttemptWindow(limits.basicPerAddress, limits.windowMs) };
    this.byUser = new AttemptWindow(limits.perUser, limits.windowMs);
  }

  /** Takes the slots of one password check, or throws a TooManyRequestsError naming the limit and the wait. */
  begin(attempt: Attempt, now = Date.now()): AttemptTicket {
    const address = addressKey(attempt.ip);
    const window = this.byAddress[attempt.kind];
    const span = minutes(this.limits.windowMs / 1000);
    const addressWait = window.waitSeconds(address, now);
    if (addressWait > 0) {
      const what = attempt.kind === 'login' ? 'failed logins' : 'failed authentications';
      throw tooMany(`Too many ${what} from this address (${window.limit} in ${span}); wait ${minutes(addressWait)} and try again`, addressWait);
    }
    const user = attempt.user;
    const perUser = user !== null && !attempt.knownDevice && !this.isRecent(user, address, now);
    const userWait = perUser ? this.byUser.waitSeconds(user, now) : 0;
    if (user !== null && userWait > 0) {
      throw tooMany(`Too many failed logins as "${user}" from all addresses together (${this.byUser.limit} in ${span}), which looks like password guessing; `
        + `wait ${minutes(userWait)}, or log in from a browser or an address that logged in before`, userWait);
    }
    const taken = [window.take(address, now), ...(perUser && user !== null ? [this.byUser.take(user, now)] : [])];
    let open = true;
    const giveBack = () => {
      if (open) for (const slots of taken) slots.used = Math.max(0, slots.used - 1);
      open = false;
    };
    return {
      succeeded: () => {
        giveBack();
        if (user !== null) this.remember(user, attempt.ip);
      },
      failed: () => {
        open = false;
      },
      abandoned: giveBack,
    };
  }

  /** A successful authentication that needed no check (cached credentials) keeps the address known. */
  remember(user: string, ip: string, now = Date.now()): void {
    const key = `${user}\n${addressKey(ip)}`;
    this.recent.delete(key);
    if (this.recent.size >= MAX_RECENT) {
      const oldest = this.recent.keys().next().value;
      if (oldest !== undefined) this.recent.delete(oldest);
    }
    this.recent.set(key, now + RECENT_SUCCESS_MS);
  }

  /** After a password change, addresses proved the old password only. */
  forgetUser(user: string): void {
    for (const key of this.recent.keys()) if (key.startsWith(`${user}\n`)) this.recent.delete(key);
  }

  private isRecent(user: string, address: string, now: number): boolean {
    return (this.recent.get(`${user}\n${address}`) ?? 0) > now;
  }
}

function tooMany(message: string, retryAfter: number): TooManyRequestsError {
  return Object.assign(new TooManyRequestsError(message), { retryAfter });
}
