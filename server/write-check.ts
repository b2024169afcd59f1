import { errorMessage } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { storageFault, unreachableDatabase } from './errors.js';

/** /health under load reuses a result this recent, so monitoring never hammers the disk. */
const CACHE_MS = 2_000;
/** A disk that takes longer than this for a one-row update or a tiny file is as good as gone. */
const PROBE_TIMEOUT_MS = 5_000;

export interface WriteCheckResult {
  ok: boolean;
  database: boolean;
  store: boolean;
  /** Why the master cannot take writes, in words an administrator acts on; null when it can. */
  reason: string | null;
}

export interface WriteCheckDeps {
  /** A tiny database write (a one-row update); throws what SQLite says. */
  writeDatabase: () => Promise<void>;
  /** A tiny file written, fsynced and removed in the package store (an object, in a bucket); throws why not. */
  writeStore: () => Promise<void>;
  /** How a hung store write names the store: a bucket or a shared folder is not "the master's disk". */
  storeName?: string;
  /** The same for the database: a PostgreSQL server is not "the master's disk" either. */
  databaseName?: string;
  log: Logger;
  cacheMs?: number;
  timeoutMs?: number;
}

/** Why one write failed: the disk's fault in words, and its code when it has one. */
interface Failure {
  phrase: string;
  code: string | null;
}

function failure(err: unknown): Failure {
  const fault = storageFault(err);
  return fault ? { phrase: fault.phrase, code: fault.code } : { phrase: errorMessage(err), code: null };
}

/**
 * A database server (PostgreSQL) that cannot be reached or is shutting down: a network or server
 * state, not a disk. Node's connection codes, and PostgreSQL's classes 08 (connection) and 57
 * (operator intervention: shutdown, starting up).
 */
function unreachable(err: unknown): Failure | null {
  const code = unreachableDatabase(err);
  if (code === null) return null;
  return { phrase: 'the master cannot reach its database', code: code === 'closed' ? null : code };
}

/**
 * One sentence for both writes. They share the data folder's disk, and SQLite reports a disk
 * turned read-only as a mere I/O error: the file system's own word (the store's) goes first.
 */
function reasonOf(database: Failure | null, store: Failure | null): string | null {
  // A database out of reach says so first: the store's disk is fine, and its own errors come after.
  const main = database?.phrase.includes('cannot reach') ? database : store ?? database;
  if (!main) return null;
  const codes = [...new Set([database?.code, store?.code].filter((c) => typeof c === 'string'))];
  const what = database && store ? 'the database and the package store' : database ? 'the database' : 'the package store';
  return `${main.phrase}${codes.length > 0 ? ` (${codes.join(', ')})` : ''}: ${what} cannot be written`;
}

/**
 * Proves, on demand and at most every couple of seconds, that the master can still write its
 * database and its package store: a database that answers `SELECT 1` may refuse every write
 * (SQLITE_IOERR on a disk turned read-only). Logs when the answer changes, never per request.
 */
export class WriteCheck {
  private last: { at: number; result: Promise<WriteCheckResult> } | null = null;
  /** The reason last logged ('' while all was well), so a failure is logged once, and its end too. */
  private logged = '';
  private failingSince = 0;
  /** Writes still under way (a hung disk): never a second one beside them. */
  private readonly pending = new Set<() => Promise<void>>();

  constructor(private readonly deps: WriteCheckDeps) {}

  check(): Promise<WriteCheckResult> {
    const now = Date.now();
    if (!this.last || now - this.last.at >= (this.deps.cacheMs ?? CACHE_MS)) this.last = { at: now, result: this.probe() };
    return this.last.result;
  }

  private async probe(): Promise<WriteCheckResult> {
    const timeoutMs = this.deps.timeoutMs ?? PROBE_TIMEOUT_MS;
    const hungOf = (what: string): Failure => ({ phrase: `${what} did not complete a write within ${timeoutMs / 1000} s`, code: null });
    const attempt = async (write: () => Promise<void>, hung: Failure, database = false): Promise<Failure | null> => {
      if (this.pending.has(write)) return hung;
      this.pending.add(write);
      const done = write().then(() => null, (err: unknown) => (database ? unreachable(err) : null) ?? failure(err)).finally(() => this.pending.delete(write));
      let timer: NodeJS.Timeout | undefined;
      const slow = new Promise<Failure>((resolve) => {
        timer = setTimeout(() => resolve(hung), timeoutMs);
      });
      try {
        return await Promise.race([done, slow]);
      } finally {
        clearTimeout(timer);
      }
    };
    const disk = hungOf('the master\'s disk');
    const [database, store] = await Promise.all([
      attempt(this.deps.writeDatabase, this.deps.databaseName ? hungOf(this.deps.databaseName) : disk, true),
      attempt(this.deps.writeStore, this.deps.storeName ? hungOf(this.deps.storeName) : disk),
    ]);
    const reason = reasonOf(database, store);
    this.report(reason, database === null, store === null);
    return { ok: reason === null, database: database === null, store: store === null, reason };
  }

  private report(reason: string | null, database: boolean, store: boolean): void {
    if ((reason ?? '') === this.logged) return;
    if (reason) {
      if (!this.logged) this.failingSince = Date.now();
      this.deps.log.error('the master cannot write to its disk: /health answers 503', { reason, database, store });
    } else {
      this.deps.log.info('the master can write to its disk again: /health answers 200', { seconds: Math.round((Date.now() - this.failingSince) / 1000) });
    }
    this.logged = reason ?? '';
  }
}
