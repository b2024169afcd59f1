import { randomBytes } from 'node:crypto';
import { chown, readdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { freePort, must, tempDir } from './run.js';

/** A PostgreSQL server of its own for a test: a cluster in a temp folder, on a loopback port. */
export interface PostgresServer {
  port: number;
  /** A URL for a database of this server (trust authentication: no password). */
  url(database: string): string;
  /** A new, empty database; its URL. */
  createDatabase(prefix?: string): Promise<string>;
  query<T = Record<string, unknown>>(database: string, sql: string, params?: unknown[]): Promise<T[]>;
  /** Stops the server (its clients' connections end), keeping its data, and starts it again. */
  halt(): Promise<void>;
  resume(): Promise<void>;
  stop(): Promise<void>;
}

/** Debian puts the server's programs in /usr/lib/postgresql/<major>/bin; the newest wins. */
async function binDir(): Promise<string | null> {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const majors = (await readdir(root)).filter((d) => /^\d+$/.test(d)).sort((a, b) => Number(b) - Number(a));
  for (const major of majors) {
    const dir = path.join(root, major, 'bin');
    if (existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'pg_ctl'))) return dir;
  }
  return null;
}

/** Why PostgreSQL tests cannot run here, or null when they can. */
export async function postgresUnavailable(): Promise<string | null> {
  if (!(await binDir())) return 'PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run installs it)';
  if (process.getuid?.() === 0 && !(await must('id', ['-u', 'postgres']).then(() => true, () => false))) return 'running as root without a postgres user to run the server as';
  return null;
}

/**
 * initdb and pg_ctl refuse to run as root: as root they run as the postgres user Debian's package
 * made, in a folder given to it.
 */
export async function startPostgres(): Promise<PostgresServer> {
  const bin = await binDir();
  if (!bin) throw new Error('PostgreSQL is not installed');
  const { dir, cleanup } = await tempDir('propagator-pg-');
  const asRoot = process.getuid?.() === 0;
  const as = (program: string, args: string[]) => (asRoot ? must('runuser', ['-u', 'postgres', '--', path.join(bin, program), ...args]) : must(path.join(bin, program), args));
  if (asRoot) {
    const uid = Number((await must('id', ['-u', 'postgres'])).trim());
    const gid = Number((await must('id', ['-g', 'postgres'])).trim());
    await chown(dir, uid, gid);
  }
  const data = path.join(dir, 'cluster');
  await as('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '--locale=C', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  // Tests make many databases: no fsync (nothing here outlives the test anyway).
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200`;
  const start = () => as('pg_ctl', ['-D', data, '-o', options, '-l', path.join(dir, 'server.log'), '-w', '-t', '60', 'start']);
  await start();
  const url = (database: string) => `postgres://postgres@127.0.0.1:${port}/${database}`;
  const query = async <T>(database: string, sql: string, params: unknown[] = []): Promise<T[]> => {
    const client = new pg.Client({ connectionString: url(database) });
    await client.connect();
    try {
      return (await client.query(sql, params)).rows as T[];
    } finally {
      await client.end();
    }
  };
  return {
    port,
    url,
    query,
    async createDatabase(prefix = 'propagator') {
      const name = `${prefix}_${randomBytes(6).toString('hex')}`;
      await query('postgres', `CREATE DATABASE ${name}`);
      return url(name);
    },
    async halt() {
      await as('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
    },
    async resume() {
      await start();
    },
    async stop() {
      await as('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
      await cleanup();
    },
  };
}
