import express, { type Express } from 'express';
import { commandSchema, type AgentStatus } from '../lib/agent-protocol.js';
import type { Logger } from '../lib/logger.js';
import { checkSignature, SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../lib/request-signing.js';
import type { CommandRunner } from './command-runner.js';
import type { Identity } from './identity.js';

/**
 * Bidirectional mode: the small HTTP API the master calls. Every call but /health must be signed
 * with the master's key (learnt at enrollment), so no one else on the network can drive the agent.
 */
export function createAgentApp(deps: { identity: () => Identity | null; runner: CommandRunner; status: () => Promise<AgentStatus>; log: Logger }): Express {
  const app = express();
  app.disable('x-powered-by');
  const raw = express.raw({ type: () => true, limit: '256kb' });

  app.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.use(raw, (req, res, next) => {
    const identity = deps.identity();
    if (!identity) {
      res.status(503).json({ error: 'this agent is not enrolled yet' });
      return;
    }
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const problem = checkSignature(identity.masterPublicKey, {
      method: req.method, path: req.path, body, agentId: identity.serverId,
      signature: req.get(SIGNATURE_HEADER), timestamp: req.get(TIMESTAMP_HEADER),
    });
    if (problem) {
      deps.log.warn('refused a call not signed by the master', { method: req.method, path: req.path, ip: req.ip ?? null, reason: problem });
      res.status(401).json({ error: problem });
      return;
    }
    next();
  });

  app.post('/api/commands', async (req, res) => {
    let data: unknown;
    try {
      data = JSON.parse((req.body as Buffer).toString('utf8'));
    } catch {
      res.status(400).json({ error: 'the command is not JSON' });
      return;
    }
    const parsed = commandSchema.safeParse(data);
    if (!parsed.success) {
      res.status(422).json({ error: `the command is malformed: ${parsed.error.issues[0]?.message ?? ''}` });
      return;
    }
    res.status(202).json(await deps.runner.submit(parsed.data));
  });

  app.get('/api/status', async (_req, res) => {
    res.json(await deps.status());
  });

  app.use((_req, res) => {
    res.status(404).json({ error: 'no such route' });
  });
  app.use((err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    deps.log.error('agent request failed', { error: err instanceof Error ? err.message : String(err) });
    res.status(500).json({ error: 'internal error (see the agent log)' });
  });
  return app;
}
