import express, { Router, type Response } from 'express';
import { z } from 'zod';
import { agentNameSchema } from '../../lib/agent-protocol.js';
import { keyFingerprint } from '../../lib/agent-keys.js';
import { ValidationError } from '../../lib/errors.js';
import { enrollTokenJson, serverRequestJson } from '../http/presenters.js';
import { idSchema } from '../http/schemas.js';
import { parse } from '../http/validation.js';
import type { MasterKey } from '../master-key.js';
import type { AdmissionService } from '../services/admission-service.js';
import type { ServerService } from '../services/server-service.js';

const HOUR_MS = 3600_000;
/** Rows of each list on the page; a flood is dealt with by address (Reject all from …). */
const SHOWN = 200;

function countBy(values: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return counts;
}

const tokenFormSchema = z.object({
  name: agentNameSchema,
  days: z.coerce.number({ error: 'Give the number of days the token stays valid' }).min(0.01, { error: 'A token stays valid 0.01 to 365 days' }).max(365, { error: 'A token stays valid 0.01 to 365 days' }).default(7),
});
const tokenApiSchema = z.object({
  name: agentNameSchema,
  validForHours: z.number({ error: 'validForHours must be a number' }).positive({ error: 'validForHours must be more than 0' }).max(365 * 24, { error: 'validForHours is at most 8760 (a year)' }).default(7 * 24),
});
const rejectFromSchema = z.object({ from: z.string({ error: 'Give the address the enrollments came from' }).min(1).max(100) });
const decisionSchema = z.object({ accept: z.boolean({ error: 'Send {"accept": true} or {"accept": false}' }) });

/**
 * "New servers": enrollments waiting for the administrator, servers asking to change their mode or
 * address, and one-time enrollment tokens; with the same under /api.
 */
export function admissionRouter(deps: { admission: AdmissionService; servers: ServerService; key: () => Promise<MasterKey> }): Router {
  const { admission, servers } = deps;
  const router = Router();
  const json = express.json({ limit: '16kb' });

  async function render(res: Response, extra: Record<string, unknown> = {}, status = 200) {
    const [pending, rejected, tokens, all] = await Promise.all([admission.listRequests('pending'), admission.listRequests('rejected'), admission.listTokens(), servers.list()]);
    const slaves = all.filter((s) => s.role === 'slave');
    res.status(status).render('admission', {
      page: 'admission', pending: pending.slice(0, SHOWN), morePending: Math.max(0, pending.length - SHOWN), rejected: rejected.slice(0, SHOWN), tokens, known: new Map(slaves.map((s) => [s.name, s])),
      pendingByAddress: countBy(pending.map((r) => r.requestedFrom ?? '')), count: 0,
      changes: slaves.filter((s) => s.requestedChange?.state === 'pending'),
      masterFingerprint: keyFingerprint((await deps.key()).publicPem), newToken: null, done: null, error: null, now: Date.now(), ...extra,
    });
  }

  router.get('/servers/new', (req, res) => render(res, { done: typeof req.query.done === 'string' ? req.query.done : null, count: Number(req.query.count) || 0 }));

  router.post('/servers/requests/:id/accept', async (req, res) => {
    await admission.accept(parse(idSchema, req.params.id), res.locals.user ?? 'admin');
    res.redirect(303, '/servers/new?done=accepted');
  });

  router.post('/servers/requests/:id/reject', async (req, res) => {
    await admission.reject(parse(idSchema, req.params.id), res.locals.user ?? 'admin');
    res.redirect(303, '/servers/new?done=rejected');
  });

  router.post('/servers/requests/reject-from', async (req, res) => {
    const { from } = parse(rejectFromSchema, req.body);
    const count = await admission.rejectFrom(from, res.locals.user ?? 'admin');
    res.redirect(303, `/servers/new?done=rejected-from&count=${count}`);
  });

  router.post('/servers/requests/:id/delete', async (req, res) => {
    await admission.deleteRequest(parse(idSchema, req.params.id), res.locals.user ?? 'admin');
    res.redirect(303, '/servers/new?done=deleted');
  });

  router.post('/servers/:id/change/:decision', async (req, res) => {
    const accept = req.params.decision === 'accept';
    if (!accept && req.params.decision !== 'reject') throw new ValidationError('Accept or reject the change');
    await admission.decideChange(parse(idSchema, req.params.id), accept, res.locals.user ?? 'admin');
    res.redirect(303, `/servers/new?done=${accept ? 'change-accepted' : 'change-rejected'}`);
  });

  router.post('/servers/tokens', async (req, res) => {
    const parsed = tokenFormSchema.safeParse(req.body);
    if (!parsed.success) return render(res, { error: parsed.error.issues[0]?.message ?? 'Invalid token request' }, 422);
    const { token, record } = await admission.createToken(parsed.data.name, parsed.data.days * 24 * HOUR_MS, res.locals.user ?? 'admin');
    await render(res, { newToken: { token, record } });
  });

  router.post('/servers/tokens/:id/delete', async (req, res) => {
    await admission.revokeToken(parse(idSchema, req.params.id), res.locals.user ?? 'admin');
    res.redirect(303, '/servers/new?done=token-deleted');
  });

  router.post('/api/servers/requests/reject', json, async (req, res) => {
    const { from } = parse(rejectFromSchema, req.body);
    res.json({ rejected: await admission.rejectFrom(from, res.locals.user ?? 'admin') });
  });

  router.post('/api/servers/requests/:id/accept', async (req, res) => {
    res.json({ serverId: await admission.accept(parse(idSchema, req.params.id), res.locals.user ?? 'admin') });
  });

  router.post('/api/servers/requests/:id/reject', async (req, res) => {
    res.json(serverRequestJson(await admission.reject(parse(idSchema, req.params.id), res.locals.user ?? 'admin')));
  });

  router.delete('/api/servers/requests/:id', async (req, res) => {
    await admission.deleteRequest(parse(idSchema, req.params.id), res.locals.user ?? 'admin');
    res.status(204).end();
  });

  router.post('/api/servers/:id/change', json, async (req, res) => {
    const { accept } = parse(decisionSchema, req.body);
    await admission.decideChange(parse(idSchema, req.params.id), accept, res.locals.user ?? 'admin');
    res.status(204).end();
  });

  router.get('/api/enroll-tokens', async (_req, res) => {
    res.json((await admission.listTokens()).map(enrollTokenJson));
  });

  router.post('/api/enroll-tokens', json, async (req, res) => {
    const input = parse(tokenApiSchema, req.body);
    const { token, record } = await admission.createToken(input.name, input.validForHours * HOUR_MS, res.locals.user ?? 'admin');
    res.status(201).json({ ...enrollTokenJson(record), token });
  });

  router.delete('/api/enroll-tokens/:id', async (req, res) => {
    await admission.revokeToken(parse(idSchema, req.params.id), res.locals.user ?? 'admin');
    res.status(204).end();
  });

  return router;
}
