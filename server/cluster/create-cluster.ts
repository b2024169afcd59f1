import type { Logger } from '../../lib/logger.js';
import type { Database, DatabaseLocation } from '../db/database.js';
import { SingleMaster, type Cluster } from './cluster.js';
import { PostgresCluster } from './postgres-cluster.js';

/** On PostgreSQL the master joins the others of its database; on SQLite it is alone. */
export function createCluster(db: Database, location: DatabaseLocation, log: Logger, name: string): Cluster {
  return location.engine === 'postgres' ? new PostgresCluster(location.url, db, log, { name, beatMs: 1000, beatTimeoutMs: 5000 }) : new SingleMaster(log);
}
