import { Router } from 'express';
import { enrollRequestSchema, reportRequestSchema } from '../../lib/agent-protocol.js';
import { ForbiddenError } from '../errors.js';
import { agentJsonBody, sendAgentJson } from '../http/agent-json.js';
import { failureLimiter } from '../http/failure-limiter.js';
import { sendPackageFile } from '../http/send-package.js';
import { parse } from '../http/validation.js';
import type { PackageStore } from '../package-store.js';
import type { AgentService } from '../services/agent-service.js';

/**
 * /api/agent/*: what agents call, with their own credentials (never the admin's). Enrollment takes
 * the enrollment token instead; wrong tokens are rate-limited like failed logins.
 */
export function agentRouter(deps: { agents: AgentService; store: PackageStore; enrollAttemptsPerWindow: number }): Router {
  const { agents, store } = deps;
  const router = Router();
  const json = agentJsonBody(1024 * 1024);

  const enrollLimiter = failureLimiter({
    windowMs: 15 * 60_000,
    limit: deps.enrollAttemptsPerWindow,
    isFailure: (_req, res) => res.statusCode === 401,
    message: 'Too many failed enrollments from this address; wait 15 minutes and try again',
  });

  router.post('/api/agent/enroll', enrollLimiter, json, async (req, res) => {
    const request = parse(enrollRequestSchema, req.body);
    sendAgentJson(res, 201, await agents.enroll(request));
  });

  router.post('/api/agent/report', json, async (req, res) => {
    const server = await agents.authenticate(req.get('authorization'));
    const body = parse(reportRequestSchema, req.body);
    if (body.status.mode === 'mailbox') agents.admitMailboxSession();
    sendAgentJson(res, 200, await agents.report(server, body.status, body.results));
  });

  router.get('/api/agent/packages/:sha256', async (req, res) => {
    const server = await agents.authenticate(req.get('authorization'));
    const sha256 = String(req.params.sha256);
    if (!/^[0-9a-f]{64}$/.test(sha256) || !(await agents.mayDownload(server, sha256))) {
      throw new ForbiddenError('This package is not assigned to this server');
    }
    await sendPackageFile(req, res, store.pathFor(sha256));
  });

  return router;
}
