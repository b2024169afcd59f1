import { Router } from 'express';
import type { Logger } from '../../lib/logger.js';
import type { Database } from '../db/database.js';
import { HealthRepo } from '../db/health-repo.js';
import type { PackageStore } from '../package-store.js';
import { WriteCheck } from '../write-check.js';

/**
 * GET /health: no authentication and no secrets, for load balancers and monitoring. 200 only when
 * the master can write its database and its package store (a tiny write each, at most every two
 * seconds: a file, or an object put and deleted in a bucket); otherwise 503 with the reason.
 */
export function healthRouter(deps: { db: Database; store: PackageStore; log: Logger }): Router {
  const router = Router();
  const repo = new HealthRepo(deps.db);
  const writes = new WriteCheck({
    writeDatabase: () => repo.touch(new Date()), writeStore: () => deps.store.probeWrite(), log: deps.log,
    ...(deps.store.shared ? { storeName: deps.store.description } : {}),
    ...(deps.db.engine === 'postgres' ? { databaseName: `the database ${deps.db.description}` } : {}),
  });
  router.get('/health', async (_req, res) => {
    const { ok, database, store, reason } = await writes.check();
    res.set('Cache-Control', 'no-store');
    if (ok) res.status(200).json({ status: 'ok', database, store });
    else res.status(503).json({ status: 'unavailable', database, store, reason });
  });
  return router;
}
