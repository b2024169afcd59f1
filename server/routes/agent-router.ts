import { Router, type ErrorRequestHandler, type RequestHandler, type Response } from 'express';
import { AGENT_KEY_HEADER, agentRequestSignatureMatches, AGENT_SIGNATURE_HEADER, FINGERPRINT_PATTERN, NONCE_HEADER, NONCE_PATTERN, parseAgentPublicKey } from '../../lib/agent-keys.js';
import { enrollRequestSchema, reportRequestSchema, sessionRequestSchema } from '../../lib/agent-protocol.js';
import { ValidationError, errorMessage } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import { AuthenticationError, ForbiddenError } from '../errors.js';
import { agentJsonBody, sendAgentJson, sendSignedAgentJson, type AnswerContext } from '../http/agent-json.js';
import { CALL_MAC_HEADER, CALL_TIME_HEADER, callMacMatches } from '../../lib/session-crypto.js';
import type { ReplayGuard } from '../replay-guard.js';
import { describeError } from '../http/error-handler.js';
import { FailureGate } from '../http/failure-limiter.js';
import { sendPackage } from '../http/send-package.js';
import { parse } from '../http/validation.js';
import type { MasterKey } from '../master-key.js';
import type { PackageStore } from '../package-store.js';
import type { AdmissionService } from '../services/admission-service.js';
import type { AgentService } from '../services/agent-service.js';


export interface AgentRouterDeps {
  agents: AgentService;
  admission: AdmissionService;
  store: PackageStore;
  key: () => Promise<MasterKey>;
  enrollAttemptsPerWindow: number;
  /** Refuses a call heard twice (shared by the masters of one PostgreSQL database). */
  replays: ReplayGuard;
  /** Downloads answered with a redirect to a presigned URL of the bucket, valid this long; null: served by the master. */
  presignSeconds?: number | null;
  log: Logger;
  /**
   * Always true in the master. The benchmark mounts a second router with false beside the real one,
   * as the reference that tells what signing answers costs (bench/mailbox.ts).
   */
  signAnswers?: boolean;
}

/**
 * /api/agent/*: what agents call, with their own credentials (never the admin's). Credentials are
 * checked from the headers before any body is read, so a stranger's request costs the master its
 * headers only. Answers are bound to the agent and the nonce it sent: signed with the master's key
 * outside sessions (enrollment, session opening), MAC'd with the session key within them.
 */
export function agentRouter(deps: AgentRouterDeps): Router {
  const { agents, admission, store, key, log } = deps;
  const router = Router();

  const { replays } = deps;
  const enrollGate = new FailureGate({
    windowMs: 15 * 60_000,
    limit: deps.enrollAttemptsPerWindow,
    message: 'Too many failed enrollments from this address; wait 15 minutes and try again',
  });

  /** Every call carries a fresh nonce and names the agent's key: an answer is bound to both. */
  const callContext: RequestHandler = (req, res, next) => {
    const nonce = req.get(NONCE_HEADER);
    const agent = req.get(AGENT_KEY_HEADER);
    if (!nonce || !NONCE_PATTERN.test(nonce)) throw new ValidationError(`Agent calls carry a fresh nonce (${NONCE_HEADER}: 16 to 64 base64url characters)`);
    res.locals.agentCall = { path: req.path, nonce, agent: agent && FINGERPRINT_PATTERN.test(agent) ? agent : '-' };
    // Within a session, answers carry the session's MAC, for that server's key.
    const server = res.locals.agentServer;
    const sessionKey = res.locals.agentSessionKey;
    if (server && sessionKey && deps.signAnswers !== false) res.locals.agentAnswer = { ...res.locals.agentCall, agent: server.keyFingerprint ?? '-', mac: sessionKey };
    next();
  };

  /** Answers outside a session are signed with the master's key (errors included, for sessions). */
  const signedByMaster = async (res: Response, agent?: string): Promise<AnswerContext | null> => {
    const call = res.locals.agentCall;
    if (!call || deps.signAnswers === false) return null;
    return { ...call, agent: agent ?? call.agent, key: (await key()).privateKey };
  };

  /**
   * The session token, checked first, before the body is read; from then on every answer carries
   * a MAC with the session key, and the call itself must carry one (checked once the body is in).
   */
  const authenticated: RequestHandler = async (req, res, next) => {
    const { server, sessionKey } = await agents.authenticate(req.get('authorization'));
    res.locals.agentServer = server;
    res.locals.agentSessionKey = sessionKey;
    next();
  };

  /** The call's MAC: a session token overheard on the network is worth nothing without the session key. */
  const callMacChecked: RequestHandler = async (req, res, next) => {
    const sessionKey = res.locals.agentSessionKey;
    const server = res.locals.agentServer;
    const body = res.locals.agentRawBody ?? Buffer.alloc(0);
    const nonce = req.get(NONCE_HEADER) ?? '';
    const time = Number(req.get(CALL_TIME_HEADER));
    if (!sessionKey || !server || !callMacMatches(sessionKey, { method: req.method, path: req.path, nonce, time, body }, req.get(CALL_MAC_HEADER))) {
      throw new AuthenticationError('This call does not carry the session\'s MAC (a session token alone is not enough); open a new session');
    }
    const replay = await replays.check(server.id, nonce, time);
    if (replay) throw new AuthenticationError(replay);
    next();
  };

  // The challenge is not signed: a forged one only makes the session it is used for fail.
  router.get('/api/agent/challenge', callContext, async (_req, res) => {
    sendAgentJson(res, 200, { challenge: await agents.challenge() });
  });

  router.post('/api/agent/enroll', callContext, async (req, res, next) => {
    const address = req.ip ?? req.socket.remoteAddress ?? 'unknown';
    enrollGate.assertOpen(address);
    try {
      res.locals.enrollCredential = await admission.checkEnrollToken(req.get('authorization'));
    } catch (err) {
      if (!(err instanceof AuthenticationError)) throw err;
      const answer = enrollGate.failed(address, err);
      if (answer === err) log.warn('enrollment refused: wrong token', { ip: address });
      throw answer;
    }
    // A right token found by a guess that raced past the limit is not confirmed either.
    enrollGate.assertOpen(address);
    next();
  }, agentJsonBody(16 * 1024), async (req, res) => {
    const request = parse(enrollRequestSchema, req.body);
    const credential = res.locals.enrollCredential;
    if (!credential) throw new AuthenticationError('The enrollment token is missing');
    const publicKey = parseAgentPublicKey(request.publicKey);
    if (!publicKey) throw new ValidationError('The agent public key is not an Ed25519 public key in PEM');
    const proof = { method: req.method, path: req.path, nonce: req.get(NONCE_HEADER) ?? '', body: res.locals.agentRawBody ?? Buffer.alloc(0) };
    if (!agentRequestSignatureMatches(publicKey, proof, req.get(AGENT_SIGNATURE_HEADER))) {
      throw new AuthenticationError('The enrollment is not signed with the key it presents (the agent must prove it holds its key)');
    }
    const outcome = await admission.enroll(credential, request, req.ip ?? req.socket.remoteAddress ?? null);
    const context = await signedByMaster(res, outcome.keyFingerprint);
    if (outcome.state === 'rejected') {
      sendSignedAgentJson(res, 403, { error: `The administrator rejected this server: ${outcome.message}` }, context);
      return;
    }
    const body = { ...outcome, masterPublicKey: (await key()).publicPem };
    sendSignedAgentJson(res, outcome.state === 'accepted' ? 201 : 202, body, context);
  });

  // Only the answer to a verified request is signed: a stranger's malformed or refused one costs
  // the master no signature, and a refusal a man in the middle provokes carries none either.
  router.post('/api/agent/session', callContext, agentJsonBody(4 * 1024), async (req, res) => {
    const request = parse(sessionRequestSchema, req.body);
    const proof = { method: req.method, path: req.path, nonce: req.get(NONCE_HEADER) ?? '', body: res.locals.agentRawBody ?? Buffer.alloc(0), signature: req.get(AGENT_SIGNATURE_HEADER) };
    const answer = await agents.openSession(request, proof);
    sendSignedAgentJson(res, 200, answer, await signedByMaster(res, request.keyFingerprint));
  });

  router.post('/api/agent/report', authenticated, callContext, (_req, res, next) => {
    if (res.locals.agentServer?.mode === 'mailbox') agents.admitMailboxSession();
    next();
  }, agentJsonBody(1024 * 1024), callMacChecked, async (req, res) => {
    const server = res.locals.agentServer;
    if (!server) throw new AuthenticationError('Agent session required');
    const body = parse(reportRequestSchema, req.body);
    sendSignedAgentJson(res, 200, await agents.report(server, body.status, body.results, body.agentTime), res.locals.agentAnswer ?? null);
  });

  // The package itself is not signed here: its own signature and the digest the signed command
  // announced are what the agent checks, byte by byte as it arrives. Refusals are MAC'd.
  router.get('/api/agent/packages/:sha256', authenticated, callContext, callMacChecked, async (req, res) => {
    const server = res.locals.agentServer;
    const sha256 = String(req.params.sha256);
    if (!server || !/^[0-9a-f]{64}$/.test(sha256) || !(await agents.mayDownload(server, sha256))) {
      throw new ForbiddenError('This package is not assigned to this server');
    }
    const source = await store.source(sha256);
    if (source && deps.presignSeconds && store.presignedUrl) {
      // The agent follows the URL in the MAC'd body, never a bare Location header, and sends its
      // credentials only to the master. It still checks every byte against the signed command.
      const location = await store.presignedUrl(sha256, deps.presignSeconds);
      res.setHeader('Location', location);
      sendSignedAgentJson(res, 307, { location, size: source.size, expiresInSeconds: deps.presignSeconds }, res.locals.agentAnswer ?? null);
      return;
    }
    await sendPackage(req, res, source);
  });

  router.use(agentErrors(log));
  return router;
}

/**
 * Errors of agent calls, as JSON, signed when the request said whom the answer is for. A body the
 * request still holds is never read: the connection is closed instead, so a stranger cannot keep
 * the master reading a slow megabyte.
 */
function agentErrors(log: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    const { status, message } = describeError(err);
    if (status >= 500) log.error('agent request failed', { method: req.method, path: req.path, status, error: errorMessage(err) });
    if (res.headersSent) {
      req.socket.destroy();
      return;
    }
    if (!req.complete) res.setHeader('Connection', 'close');
    const retryAfter = (err as { retryAfter?: unknown }).retryAfter;
    if (typeof retryAfter === 'number') res.setHeader('Retry-After', String(retryAfter));
    sendSignedAgentJson(res, status, { error: message }, res.locals.agentAnswer ?? null);
  };
}
