import { Router } from 'express';
import { idSchema } from '../http/schemas.js';
import { z } from 'zod';
import { formatBytes, serverJson, serverRequestJson } from '../http/presenters.js';
import type { AdmissionService } from '../services/admission-service.js';
import { paginate } from '../http/paging.js';
import { serversQuery } from '../http/query-schemas.js';
import { parse, parseQuery } from '../http/validation.js';
import type { ServerService } from '../services/server-service.js';
import type { SettingsService } from '../services/settings-service.js';

/** "Print servers" page and /api/servers. */
const serverStateQuery = z.object({
  state: z.enum(['accepted', 'pending', 'rejected'], { error: 'state must be accepted (the domain), pending or rejected (enrollment requests)' }).default('accepted'),
});

export function serversRouter(deps: { servers: ServerService; settings: SettingsService; admission: AdmissionService }): Router {
  const { servers, settings, admission } = deps;
  const router = Router();

  router.get('/', (_req, res) => res.redirect(303, '/servers'));

  router.get('/servers', async (req, res) => {
    const query = parseQuery(serversQuery, req.query);
    const list = await servers.list();
    const parity = await servers.parity(list);
    const enrollSource = await settings.enrollTokenSource();
    const paged = paginate(list, { page: query.page, q: query.q, size: 100, text: (s) => [s.name, s.mode, s.address, s.version, s.status, s.role].join(' ') });
    const clockWarnings = list.filter((s) => s.clockWarning !== null);
    res.render('servers', { page: 'servers', servers: paged.items, paged, slaveCount: list.length - 1, parity, clockWarnings, enrollSource, formatBytes, removed: query.removed ?? null });
  });

  router.get('/api/servers', async (req, res) => {
    const { state } = parse(serverStateQuery, req.query);
    if (state === 'accepted') res.json((await servers.list()).map(serverJson));
    else res.json((await admission.listRequests(state)).map(serverRequestJson));
  });

  router.delete('/api/servers/:id', async (req, res) => {
    await servers.remove(parse(idSchema, req.params.id), res.locals.user ?? 'admin');
    res.status(204).end();
  });

  router.post('/servers/:id/remove', async (req, res) => {
    const id = parse(idSchema, req.params.id);
    const name = (await servers.list()).find((s) => s.id === id)?.name ?? String(id);
    await servers.remove(id, res.locals.user ?? 'admin');
    res.redirect(303, `/servers?removed=${encodeURIComponent(name)}`);
  });

  return router;
}
