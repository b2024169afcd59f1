import path from 'node:path';
import { ValidationError } from '../../lib/errors.js';
import type { DatabaseLocation } from './database.js';

/**
 * --database: a SQLite file (a path, or sqlite:PATH; default DATA/propagator.sqlite) or a
 * PostgreSQL URL (postgres://user@host:5432/db; the password from the URL or PGPASSWORD).
 */
export function parseDatabaseLocation(text: string | undefined, dataDir: string, cwd = process.cwd()): DatabaseLocation {
  if (text === undefined || text === '') return { engine: 'sqlite', file: path.join(dataDir, 'propagator.sqlite') };
  if (/^postgres(ql)?:\/\//i.test(text)) {
    try {
      new URL(text);
    } catch {
      throw new ValidationError('--database: not a valid PostgreSQL URL (example: postgres://propagator@db.example:5432/propagator)');
    }
    return { engine: 'postgres', url: text };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(text)?.[1]?.toLowerCase();
  if (scheme === 'sqlite' || scheme === 'file') return { engine: 'sqlite', file: path.resolve(cwd, text.slice(scheme.length + 1).replace(/^\/\/(?=\/)/, '')) };
  if (scheme && scheme.length > 1) throw new ValidationError(`--database: a SQLite file or a postgres:// URL, not "${scheme}:"`);
  return { engine: 'sqlite', file: path.resolve(cwd, text) };
}
