import { access, copyFile, mkdir, readdir, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { lockDataDir } from '../lib/data-lock.js';
import { ConfigurationError } from '../lib/errors.js';
import { copyDatabase } from '../server/db/copy-database.js';
import { parseDatabaseLocation } from '../server/db/location.js';
import { openDatabase } from '../server/db/open-database.js';
import { SqliteDatabase } from '../server/db/sqlite-database.js';
import { UsageError, type CliIo } from './io.js';

export const DATABASE_HELP = `propagator database copy --data DIR --to postgres://URL [--store DIR]
    Moves a master from SQLite to PostgreSQL (to run several masters): copies its database
    (DIR/propagator.sqlite: packages, servers, operations and their history, sessions, settings)
    and its master key into an empty PostgreSQL database, in one transaction; with --store, its
    package files into the folder the masters will share. The master must be stopped. Its agents
    keep their identity and keep trusting the master's key.`;

export async function databaseCopy(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { data: { type: 'string' }, to: { type: 'string' }, store: { type: 'string' } } });
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}`);
  if (!values.data) throw new UsageError('missing --data (the data folder of the master to copy)');
  if (!values.to) throw new UsageError('missing --to (the PostgreSQL database to copy into, postgres://…)');
  const dataDir = path.resolve(values.data);
  const target = parseDatabaseLocation(values.to, dataDir);
  if (target.engine !== 'postgres') throw new UsageError('--to must be a postgres:// URL');
  const file = path.join(dataDir, 'propagator.sqlite');
  await access(file).catch(() => {
    throw new ConfigurationError(`no master database in ${dataDir} (give the master's data folder with --data)`);
  });
  // The master stopped: nothing changes the file while it is copied ("another master (pid N) uses DIR" otherwise).
  const lock = await lockDataDir(dataDir, 'master');
  try {
    const from = await SqliteDatabase.open(file);
    try {
      const to = await openDatabase(target);
      try {
        const key = await readFile(path.join(dataDir, 'master-key.pem'), 'utf8').catch(() => null);
        const report = await copyDatabase(from, to, key ? { master_private_key: key } : {});
        io.err(`Copied into ${to.description}: ${Object.entries(report.rows).map(([t, n]) => `${t} ${n}`).join(', ')}${key ? ', and the master key' : ''}.`);
      } finally {
        await to.close();
      }
    } finally {
      await from.close();
    }
    if (values.store) {
      const copied = await copyPackages(path.join(dataDir, 'packages'), path.resolve(values.store));
      io.err(`Copied ${copied} package file(s) into ${path.resolve(values.store)}.`);
    } else {
      io.err(`Give the masters a --store with the files of ${path.join(dataDir, 'packages')} (or run again with --store DIR).`);
    }
    return 0;
  } finally {
    await lock.release();
  }
}

/** Content-addressed files: one already there is the same package, and stays. */
async function copyPackages(from: string, to: string): Promise<number> {
  await mkdir(to, { recursive: true, mode: 0o700 });
  const present = new Set(await readdir(to));
  let copied = 0;
  for (const name of (await readdir(from)).filter((f) => /^[0-9a-f]{64}\.pkg$/.test(f) && !present.has(f))) {
    const incoming = path.join(to, `.incoming-${name}`);
    await copyFile(path.join(from, name), incoming);
    await rename(incoming, path.join(to, name));
    copied++;
  }
  return copied;
}
