import { Router } from 'express';
import type { Database } from '../db/database.js';
import type { PackageStore } from '../package-store.js';

/** GET /health: no authentication and no secrets, for load balancers and monitoring. */
export function healthRouter(deps: { db: Database; store: PackageStore }): Router {
  const router = Router();
  router.get('/health', async (_req, res) => {
    const database = await deps.db.get<{ ok: number }>('SELECT 1 AS ok').then((r) => r?.ok === 1, () => false);
    const store = await deps.store.usable();
    res.status(database && store ? 200 : 503).json({ status: database && store ? 'ok' : 'unavailable', database, store });
  });
  return router;
}
