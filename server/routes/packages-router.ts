import { Router } from 'express';
import type { MasterConfig } from '../config.js';
import { describeError } from '../http/error-handler.js';
import { formatBytes, packageJson } from '../http/presenters.js';
import { idSchema } from '../http/schemas.js';
import type { UploadReceiver } from '../http/upload.js';
import { updatesQuery } from '../http/query-schemas.js';
import { parse, parseQuery } from '../http/validation.js';
import { PackageService } from '../services/package-service.js';
import { propagationBlocker } from '../services/propagation-rules.js';
import type { SettingsService } from '../services/settings-service.js';

export interface PackagesRouterDeps {
  packages: PackageService;
  settings: SettingsService;
  receiveUpload: UploadReceiver;
  config: Pick<MasterConfig, 'maxUploadBytes'>;
}

/** "Updates" and "Add an update" pages, and /api/packages. */
export function packagesRouter(deps: PackagesRouterDeps): Router {
  const { packages, receiveUpload } = deps;
  const router = Router();
  const user = (locals: Express.Locals) => locals.user ?? 'admin';

  router.get('/api/packages', async (_req, res) => {
    res.json((await packages.list()).map(packageJson));
  });

  router.get('/api/packages/:id', async (req, res) => {
    res.json(packageJson(await packages.get(parse(idSchema, req.params.id))));
  });

  router.delete('/api/packages/:id', async (req, res) => {
    await packages.delete(parse(idSchema, req.params.id), user(res.locals));
    res.status(204).end();
  });

  router.post('/api/packages', async (req, res) => {
    const { file, name } = await receiveUpload(req, res);
    const stored = await packages.add(file, name, user(res.locals));
    res.status(201).location(`/api/packages/${stored.id}`).json(packageJson(stored));
  });

  router.get('/updates', async (req, res) => {
    const query = parseQuery(updatesQuery, req.query);
    const list = await packages.list();
    const master = await deps.settings.productInfo();
    res.render('updates', {
      page: 'updates',
      master,
      packages: list.map((p) => ({ ...p, displayState: PackageService.displayState(p), blocker: propagationBlocker(p, master) })),
      formatBytes,
      deleted: query.deleted ?? null,
    });
  });

  router.get('/updates/new', (_req, res) => {
    res.render('add-update', { page: 'add', result: null, error: null, maxUpload: formatBytes(deps.config.maxUploadBytes), formatBytes });
  });

  // The console form: the page's script sends it with XHR (progress bar) and asks for JSON;
  // without JavaScript the browser posts it and gets the page back with the verdict.
  router.post('/updates', async (req, res) => {
    try {
      const { file, name } = await receiveUpload(req, res);
      const stored = await packages.add(file, name, user(res.locals));
      res.status(201).format({
        json: () => res.json(packageJson(stored)),
        html: () => res.render('add-update', { page: 'add', result: stored, error: null, maxUpload: formatBytes(deps.config.maxUploadBytes), formatBytes }),
      });
    } catch (err) {
      const { status, message } = describeError(err);
      if (status >= 500 || req.accepts(['html', 'json']) !== 'html') throw err;
      res.status(status).render('add-update', { page: 'add', result: null, error: message, maxUpload: formatBytes(deps.config.maxUploadBytes), formatBytes });
    }
  });

  router.post('/updates/:id/delete', async (req, res) => {
    const deleted = await packages.delete(parse(idSchema, req.params.id), user(res.locals));
    res.redirect(303, `/updates?deleted=${encodeURIComponent(deleted.name)}`);
  });

  return router;
}
