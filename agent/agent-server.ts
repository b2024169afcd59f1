import express, { type Express } from 'express';
import { commandSchema, type AgentStatus } from '../lib/agent-protocol.js';
import type { Logger } from '../lib/logger.js';
import { NONCE_HEADER } from '../lib/agent-keys.js';
import { checkSignature, MAX_SKEW_MS, SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../lib/request-signing.js';
import type { CommandRunner } from './command-runner.js';
import type { Identity } from './identity.js';

/**
 * The nonces of the signed calls seen within the signature's lifetime: a call replayed (by someone
 * who recorded it on the network) is refused instead of answered again. Bounded: past the bound,
 * the oldest are dropped, which only matters for calls older than the signatures accept anyway.
 */
export class NonceCache {
  private readonly seen = new Map<string, number>();

  constructor(private readonly ttlMs = 2 * MAX_SKEW_MS, private readonly max = 100_000) {}

  /** True the first time a nonce is seen within the lifetime; false for a replay. */
  remember(nonce: string, now = Date.now()): boolean {
    const expiry = this.seen.get(nonce);
    if (expiry !== undefined && expiry > now) return false;
    if (this.seen.size >= this.max) {
      for (const [key, until] of this.seen) {
        if (until <= now || this.seen.size >= this.max) this.seen.delete(key);
        else break;
      }
    }
    this.seen.delete(nonce);
    this.seen.set(nonce, now + this.ttlMs);
    return true;
  }
}

/**
 * Bidirectional mode: the small HTTP API the master calls. Every call but /health must be signed
 * with the master's key (learnt at enrollment), fresh, and never seen before, so no one else on the
 * network can drive the agent, or make it act twice on a recorded call.
 */
export function createAgentApp(deps: { identity: () => Identity | null; runner: CommandRunner; status: () => Promise<AgentStatus>; log: Logger }): Express {
  const app = express();
  const nonces = new NonceCache();
  app.disable('x-powered-by');
  const raw = express.raw({ type: () => true, limit: '256kb' });

  app.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.use(raw, (req, res, next) => {
    const identity = deps.identity();
    if (!identity || identity.serverId === null) {
      res.status(503).json({ error: 'this agent is not an accepted server of the domain yet' });
      return;
    }
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const nonce = req.get(NONCE_HEADER);
    let problem = checkSignature(identity.masterPublicKey, {
      method: req.method, path: req.path, body, agentId: identity.serverId,
      signature: req.get(SIGNATURE_HEADER), timestamp: req.get(TIMESTAMP_HEADER), nonce,
    });
    if (!problem && !nonces.remember(nonce as string)) problem = 'the request was already received once (a replay is refused)';
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
