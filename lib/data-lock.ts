import { randomUUID } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sqlite3 from 'sqlite3';
import { z } from 'zod';
import { ConfigurationError, errorMessage } from './errors.js';
import { processStamp, stillRuns } from './process-table.js';

/**
 * One process per data folder. Two masters on one folder would each run crash recovery on the
 * other's uploads and both run the background loops on one database; two agents would run one
 * install twice.
 *
 * The lock is an OS lock, held by the kernel for as long as the process lives: SQLite's exclusive
 * lock (POSIX fcntl record locks) on DATA/propagator.lock, taken through the sqlite3 module the
 * project already has, since Node has no flock(2). The kernel drops it when the process dies,
 * SIGKILL included, so no stale lock is ever left to judge, no reused pid can keep it, and two
 * processes starting at once cannot both get it (the kernel decides). fcntl locks are not inherited
 * by child processes, so a hook left running does not hold its agent's folder either. A lock file
 * made with O_EXCL would need a takeover of stale locks, which cannot be made atomic with what the
 * file system offers (two takers may each remove the other's fresh lock).
 *
 * DATA/propagator.lock.json says who holds the lock (pid, start time), for the refusal message
 * only: it decides nothing. The holder never opens propagator.lock itself (closing any descriptor
 * of a file drops the process's fcntl locks on it); only SQLite does.
 */
export type LockRole = 'master' | 'agent';

export interface DataLock {
  /** Gives the folder up (the process's exit does too). */
  release(): Promise<void>;
}

const LOCK_FILE = 'propagator.lock';
const OWNER_FILE = 'propagator.lock.json';
/** Tries before a busy lock is taken for a live holder's (about half a second). */
const LOCK_ATTEMPTS = 10;
/** A holder that has just taken the lock writes its record within milliseconds. */
const OWNER_WAIT_MS = 2_000;

const ownerSchema = z.object({
  role: z.enum(['master', 'agent']),
  pid: z.number().int().positive(),
  startTime: z.number().int().nonnegative(),
  bootId: z.string(),
  since: z.string(),
});
type Owner = z.infer<typeof ownerSchema>;

function exec(db: sqlite3.Database, sql: string): Promise<void> {
  return new Promise((resolve, reject) => db.exec(sql, (err) => (err ? reject(err) : resolve())));
}

function closeDb(db: sqlite3.Database): Promise<void> {
  return new Promise((resolve) => db.close(() => resolve()));
}

async function readOwner(file: string): Promise<Owner | null> {
  try {
    const parsed = ownerSchema.safeParse(JSON.parse(await readFile(file, 'utf8')));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

async function refusal(dir: string, role: LockRole): Promise<string> {
  const file = path.join(dir, OWNER_FILE);
  const deadline = Date.now() + OWNER_WAIT_MS;
  let owner = await readOwner(file);
  // The record may still be the one a killed holder left: wait for the live holder's own.
  while (!(owner && (await stillRuns(owner))) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    owner = await readOwner(file);
  }
  if (!owner) return `another ${role} uses ${dir}`;
  return `${owner.role === role ? 'another' : 'a'} ${owner.role} (pid ${owner.pid}) uses ${dir}`;
}

async function writeOwner(file: string, owner: Owner): Promise<void> {
  const tmp = `${file}.${randomUUID()}.tmp`;
  await writeFile(tmp, `${JSON.stringify(owner)}\n`, { mode: 0o600 });
  await rename(tmp, file);
}

/**
 * Takes the data folder for this process, before anything else touches it, or refuses with
 * "another master (pid N) uses DATA" (a ConfigurationError: exit status 2).
 */
export async function lockDataDir(dir: string, role: LockRole): Promise<DataLock> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const lockFile = path.join(dir, LOCK_FILE);
  let db: sqlite3.Database | null = null;
  for (let attempt = 1; !db; attempt++) {
    const handle = await new Promise<sqlite3.Database>((resolve, reject) => {
      const opened = new sqlite3.Database(lockFile, (err) => (err ? reject(err) : resolve(opened)));
    }).catch((err: unknown) => {
      throw new ConfigurationError(`cannot open the lock file ${lockFile} (${errorMessage(err)})`);
    });
    try {
      // The journal in memory (set first, while reads still let their lock go): nothing is ever
      // written, and no journal file is left beside it. EXCLUSIVE locking mode then keeps the lock
      // past the transaction, until the connection closes.
      await exec(handle, 'PRAGMA busy_timeout = 0; PRAGMA journal_mode = MEMORY; PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT;');
      db = handle;
    } catch (err) {
      await closeDb(handle);
      if ((err as { code?: string }).code !== 'SQLITE_BUSY') {
        throw new ConfigurationError(`cannot lock the data folder ${dir} with ${lockFile} (${errorMessage(err)}): if it is not a file Propagator made, remove it`);
      }
      // Two processes starting at the same moment can each hold the shared lock on the way to the
      // exclusive one, and both be refused: each lets go and tries again after a random pause, so
      // one of them gets it. A live holder refuses every attempt.
      if (attempt >= LOCK_ATTEMPTS) throw new ConfigurationError(await refusal(dir, role));
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 60));
    }
  }
  await chmod(lockFile, 0o600);
  const ownerFile = path.join(dir, OWNER_FILE);
  const me = await processStamp(process.pid);
  await writeOwner(ownerFile, { role, pid: process.pid, startTime: me?.startTime ?? 0, bootId: me?.bootId ?? 'unknown', since: new Date().toISOString() });
  let released: Promise<void> | null = null;
  return {
    release: () => {
      // The record goes first, while the lock is held: it can only be this process's own.
      released ??= rm(ownerFile, { force: true }).then(() => closeDb(db));
      return released;
    },
  };
}
