/**
 * `npm run test:postgres`: the in-process test files again, each master on a database of its own
 * on a real PostgreSQL server started here (so the one data-access layer is proven on both
 * engines). Files that read the SQLite file itself, or only drive processes, are left out.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { postgresUnavailable, startPostgres } from './helpers/postgres.js';

const FILES = [
  'admission', 'agent', 'agent-identity', 'agent-limits', 'agent-modes', 'agent-trust', 'clock-skew', 'command-index',
  'cross-site', 'hooks', 'master-console', 'master-packages', 'operations', 'query-validation', 'report-loop', 'sessions',
];

const here = path.dirname(fileURLToPath(import.meta.url));
const unavailable = await postgresUnavailable();
if (unavailable) {
  process.stderr.write(`test:postgres skipped: ${unavailable}\n`);
  process.exit(0);
}
const server = await startPostgres();
let code: number;
try {
  const files = (process.argv.length > 2 ? process.argv.slice(2) : FILES).map((f) => path.join(here, `${f}.test.js`));
  const child = spawn(process.execPath, ['--test', '--enable-source-maps', '--test-concurrency=2', ...files], {
    stdio: 'inherit',
    env: { ...process.env, PROPAGATOR_TEST_POSTGRES: server.url('postgres') },
  });
  code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
} finally {
  await server.stop();
}
process.exit(code);
