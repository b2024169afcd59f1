import type { Database, DatabaseLocation } from './database.js';
import { PostgresDatabase } from './postgres-database.js';
import { SqliteDatabase } from './sqlite-database.js';

export function openDatabase(location: DatabaseLocation, options: { onIdleError?: (err: Error) => void } = {}): Promise<Database> {
  return location.engine === 'sqlite' ? SqliteDatabase.open(location.file) : PostgresDatabase.open(location.url, options);
}
