import express, { Router, type Response } from 'express';
import { z } from 'zod';
import { ValidationError } from '../../lib/errors.js';
import { durationSeconds, operationCsv, operationJson } from '../http/operation-presenters.js';
import { paginate } from '../http/paging.js';
import { idSchema } from '../http/schemas.js';
import { OPERATION_STATES, operationApiQuery, operationPageQuery, operationsApiQuery, operationsPageQuery, TARGET_STATES } from '../http/query-schemas.js';
import { parse, parseQuery } from '../http/validation.js';
import type { OperationService } from '../services/operation-service.js';
import { PackageService } from '../services/package-service.js';
import { propagationBlocker } from '../services/propagation-rules.js';
import type { ServerService } from '../services/server-service.js';
import type { SettingsService } from '../services/settings-service.js';

const operationSchema = z.object({
  action: z.enum(['propagate', 'apply'], { error: 'The action must be "propagate" or "apply"' }),
  package: z.number({ error: 'Give the id of a valid update in "package"' }).int({ error: 'Give the id of a valid update in "package"' }).positive({ error: 'Give the id of a valid update in "package"' }),
  servers: z.union([z.literal('all'), z.array(z.number().int().positive(), { error: 'Give "servers": a list of server ids, or "all"' }).max(100_000)], { error: 'Give "servers": a list of server ids, or "all"' }),
  allowDowngrade: z.boolean({ error: '"allowDowngrade" must be true or false' }).optional(),
});

const PAGE_SIZE = 50;

/** "Propagate", "Apply", "Plug and Print operations", the operation report, and /api/operations. */
export function operationsRouter(deps: { operations: OperationService; packages: PackageService; servers: ServerService; settings: SettingsService }): Router {
  const { operations } = deps;
  const router = Router();
  const user = (res: Response) => res.locals.user ?? 'admin';

  // ---- REST API
  router.post('/api/operations', express.json({ limit: '2mb' }), async (req, res) => {
    const input = parse(operationSchema, req.body);
    const op = await operations.create({ action: input.action, packageId: input.package, servers: input.servers, allowDowngrade: input.allowDowngrade ?? false, user: user(res) });
    res.status(202).location(`/api/operations/${op.id}`).json({ id: op.id });
  });

  router.get('/api/operations', async (req, res) => {
    const { state, limit = 100, offset = 0 } = parseQuery(operationsApiQuery, req.query);
    const { operations: list, total } = await operations.list({ state, limit, offset });
    res.set('X-Total-Count', String(total)).json(list.map((o) => operationJson(o, o.counts)));
  });

  router.get('/api/operations/:id', async (req, res) => {
    const { download } = parseQuery(operationApiQuery, req.query);
    const report = await operations.report(parse(idSchema, req.params.id));
    if (download !== undefined) res.attachment(`operation-${report.operation.id}.json`);
    res.json(operationJson(report.operation, report.counts, report.targets));
  });

  router.get(['/api/operations/:id/report.csv', '/operations/:id/report.csv'], async (req, res) => {
    const report = await operations.report(parse(idSchema, req.params.id));
    res.attachment(`operation-${report.operation.id}.csv`).type('text/csv; charset=utf-8').send(operationCsv(report));
  });

  router.post('/api/operations/:id/cancel', async (req, res) => {
    const id = parse(idSchema, req.params.id);
    await operations.cancel(id, user(res));
    const report = await operations.report(id);
    res.json(operationJson(report.operation, report.counts, report.targets));
  });

  router.post('/api/operations/:id/retry', async (req, res) => {
    const op = await operations.retry(parse(idSchema, req.params.id), user(res));
    res.status(202).location(`/api/operations/${op.id}`).json({ id: op.id });
  });

  // ---- Console
  async function renderForm(res: Response, action: 'propagate' | 'apply', form: { packageId?: number; servers?: number[]; all?: boolean; allowDowngrade?: boolean }, error: string | null, status = 200) {
    const master = await deps.settings.productInfo();
    const packages = (await deps.packages.list()).filter((p) => PackageService.displayState(p) === 'valid' && propagationBlocker(p, master) === null);
    const servers = (await deps.servers.list()).filter((s) => s.role === 'slave');
    res.status(status).render('operation-new', { page: action, action, packages, servers, form, error, master });
  }

  router.get(['/propagate', '/apply'], async (req, res) => {
    await renderForm(res, req.path === '/propagate' ? 'propagate' : 'apply', {}, null);
  });

  router.post('/operations', async (req, res) => {
    const body = req.body as Record<string, string | string[] | undefined>;
    const action = body.action === 'apply' ? 'apply' : 'propagate';
    const list = ([] as string[]).concat(body.servers ?? []).map(Number).filter((n) => Number.isInteger(n) && n > 0);
    const form = { packageId: Number(body.package) || undefined, servers: list, all: body.all === 'on', allowDowngrade: body.allowDowngrade === 'on' };
    try {
      if (!form.packageId) throw new ValidationError('Choose the update to ' + action);
      const op = await operations.create({ action, packageId: form.packageId, servers: form.all ? 'all' : list, allowDowngrade: form.allowDowngrade, user: user(res) });
      res.redirect(303, `/operations/${op.id}`);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      await renderForm(res, action, form, err.message, 422);
    }
  });

  router.get('/operations', async (req, res) => {
    const { page = 1, state } = parseQuery(operationsPageQuery, req.query);
    const { operations: list, total } = await operations.list({ state, limit: PAGE_SIZE, offset: (page - 1) * PAGE_SIZE });
    res.render('operations', { page: 'operations', operations: list, total, pageNumber: page, pages: Math.max(1, Math.ceil(total / PAGE_SIZE)), state: state ?? '', states: OPERATION_STATES });
  });

  router.get('/operations/:id', async (req, res) => {
    const query = parseQuery(operationPageQuery, req.query);
    const report = await operations.report(parse(idSchema, req.params.id));
    const targetFilter = query.target ?? '';
    const shown = targetFilter ? report.targets.filter((t) => t.target === targetFilter) : report.targets;
    const paged = paginate(shown, { page: query.page, q: query.q, size: 100, text: (t) => [t.serverName, t.mode, t.target, t.message, t.versionBefore, t.versionAfter].join(' ') });
    const history = await operations.history({ ...report, targets: paged.items });
    res.render('operation', { page: 'operations', report, paged, targetFilter, targetStates: TARGET_STATES, history, durationSeconds });
  });

  router.post('/operations/:id/cancel', async (req, res) => {
    const id = parse(idSchema, req.params.id);
    await operations.cancel(id, user(res));
    res.redirect(303, `/operations/${id}`);
  });

  router.post('/operations/:id/retry', async (req, res) => {
    const op = await operations.retry(parse(idSchema, req.params.id), user(res));
    res.redirect(303, `/operations/${op.id}`);
  });

  return router;
}
