import { access } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { agentNameSchema } from '../lib/agent-protocol.js';
import { ConfigurationError } from '../lib/errors.js';
import { createLogger } from '../lib/logger.js';
import { parseDatabaseLocation } from '../server/db/location.js';
import { openDatabase } from '../server/db/open-database.js';
import { SettingsRepo } from '../server/db/settings-repo.js';
import { AdmissionService } from '../server/services/admission-service.js';
import { SettingsService } from '../server/services/settings-service.js';
import { UsageError, type CliIo } from './io.js';

export const TOKEN_HELP = `propagator token create --name NAME [--data DIR] [--database FILE|postgres://URL] [--valid-for HOURS]
    Makes a one-time enrollment token for the server NAME (default validity 168 hours), on the
    master's host, in the master's data folder (default: $PROPAGATOR_DATA_DIR, else ./data). The
    agent started with it is accepted at once as NAME; the token then stops working. Printed once.`;

export async function tokenCreate(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { name: { type: 'string' }, data: { type: 'string' }, database: { type: 'string' }, 'valid-for': { type: 'string' } } });
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}`);
  if (!values.name) throw new UsageError('missing --name (the server the token enrolls)');
  const name = agentNameSchema.safeParse(values.name);
  if (!name.success) throw new UsageError(name.error.issues[0]?.message ?? 'invalid name');
  const hours = Number(values['valid-for'] ?? 168);
  if (!Number.isFinite(hours) || hours <= 0 || hours > 8760) throw new UsageError('--valid-for is a number of hours, more than 0 and at most 8760');
  const dataDir = path.resolve(values.data ?? io.env.PROPAGATOR_DATA_DIR ?? 'data');
  const location = parseDatabaseLocation(values.database ?? (io.env.PROPAGATOR_DATABASE_URL || undefined), dataDir);
  // Never create a database here: a mistyped folder would make a token for no master.
  if (location.engine === 'sqlite') {
    await access(location.file).catch(() => {
      throw new ConfigurationError(`no master database in ${path.dirname(location.file)} (give the master's data folder with --data, or its --database)`);
    });
  }
  const db = await openDatabase(location);
  try {
    const log = createLogger({ level: 'warn', write: () => undefined });
    const admission = new AdmissionService(db, new SettingsService(new SettingsRepo(db), log), { autoAccept: false, maxPending: 0 }, log);
    const user = io.env.SUDO_USER || io.env.USER || 'command line';
    const { token, record } = await admission.createToken(name.data, hours * 3600_000, `${user} (command line)`);
    io.err(`One-time enrollment token for "${record.name}", valid until ${record.expiresAt} (shown only now):`);
    io.out(token);
    io.err(`On that server: PROPAGATOR_ENROLL_TOKEN=<token> propagator agent --name ${record.name} ... (or --enroll-token-file FILE)`);
    return 0;
  } finally {
    await db.close();
  }
}
