import express, { type Express } from 'express';
import { commandSchema, type AgentStatus } from '../lib/agent-protocol.js';
import type { Logger } from '../lib/logger.js';
import { NONCE_HEADER, NONCE_PATTERN } from '../lib/agent-keys.js';
import type { NonceCache } from './nonce-cache.js';
import { AGENT_TIME_HEADER, checkSignature, REFUSAL_HEADER, SIGNATURE_HEADER, staleness, TIMESTAMP_HEADER, type Refusal } from '../lib/request-signing.js';
import type { CommandRunner } from './command-runner.js';
import type { Identity } from './identity.js';

/**
 * Bidirectional mode: the small HTTP API the master calls. Every call but /health must be signed
 * with the master's key (learnt at enrollment), fresh, and never seen before, so no one else on the
 * network can drive the agent, or make it act twice on a recorded call.
 */
export function createAgentApp(deps: { identity: () => Identity | null; runner: CommandRunner; status: () => Promise<AgentStatus>; log: Logger; nonces: NonceCache }): Express {
  const app = express();
  const { nonces } = deps;
  app.disable('x-powered-by');
  // A command is well under 1 KiB.
  const raw = express.raw({ type: () => true, limit: '16kb' });

  /** A refusal: its reason in a header (the master reads headers only), the sentence in the body. */
  const refuse = (res: express.Response, status: number, refusal: Refusal) => {
    res.set(REFUSAL_HEADER, refusal.reason).status(status).json({ error: refusal.message });
  };

  // Every answer says what this slave's clock reads: the master measures the offset from it, and
  // names it when it is why a call is refused.
  app.use((_req, res, next) => {
    res.set(AGENT_TIME_HEADER, String(Date.now()));
    next();
  });

  app.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });

  // A call that is not even shaped like a fresh signed one is refused from its headers, before
  // its body is read, and its connection closed: a stranger costs this print server nothing.
  app.use((req, res, next) => {
    const signed = req.get(SIGNATURE_HEADER) && NONCE_PATTERN.test(req.get(NONCE_HEADER) ?? '');
    const stale = signed ? staleness(req.get(TIMESTAMP_HEADER)) : null;
    if (signed && !stale) return next();
    refuse(res.set('Connection', 'close'), 401, stale ?? { reason: 'unsigned', message: 'the request is not signed by the master' });
  });

  app.use(raw, async (req, res, next) => {
    const identity = deps.identity();
    if (!identity || identity.serverId === null) {
      refuse(res, 503, { reason: 'not-accepted', message: 'this agent is not an accepted server of the domain yet' });
      return;
    }
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const nonce = req.get(NONCE_HEADER);
    let problem = checkSignature(identity.masterPublicKey, {
      method: req.method, path: req.path, body, agentId: identity.serverId,
      signature: req.get(SIGNATURE_HEADER), timestamp: req.get(TIMESTAMP_HEADER), nonce,
    });
    if (!problem && !(await nonces.remember(nonce as string, Date.now(), (code) => deps.log.error('the seen nonces could not be written: kept in memory', { code })))) problem = { reason: 'replay', message: 'the request was already received once (a replay is refused)' };
    if (problem) {
      deps.log.warn('refused a call not signed by the master', { method: req.method, path: req.path, ip: req.ip ?? null, reason: problem.message });
      refuse(res, 401, problem);
      return;
    }
    next();
  });

  app.post('/api/commands', async (req, res) => {
    let data: unknown;
    try {
      data = JSON.parse((req.body as Buffer).toString('utf8'));
    } catch {
      refuse(res, 400, { reason: 'malformed', message: 'the command is not JSON' });
      return;
    }
    const parsed = commandSchema.safeParse(data);
    if (!parsed.success) {
      refuse(res, 422, { reason: 'malformed', message: `the command is malformed: ${parsed.error.issues[0]?.message ?? ''}` });
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
