import type { KeyObject } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import { SIGNATURE_HEADER, signAnswer } from '../../lib/request-signing.js';
import { ANSWER_MAC_HEADER, macAnswer } from '../../lib/session-crypto.js';
import { BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError } from '../errors.js';

/**
 * JSON in and out for the agent API, whose calls come from thousands of slaves every few seconds.
 * express.json() and res.json() handle what agents never use (compressed bodies, other charsets,
 * ETags and freshness checks), and with them a mailbox call cost the master about twice the CPU
 * of a trivial route (docs/PERFORMANCE.md). Same answers as theirs: 400 for bad JSON, 413 above
 * the limit; and 415 for a body that is not JSON at all.
 */
export function agentJsonBody(limitBytes: number): RequestHandler {
  return (req, res, next) => {
    if (!/^application\/json\s*(;|$)/i.test(req.headers['content-type'] ?? '')) {
      req.resume();
      return next(new UnsupportedMediaTypeError('Agent calls carry JSON (Content-Type: application/json)'));
    }
    const encoding = req.headers['content-encoding'];
    if (encoding !== undefined && encoding.toLowerCase() !== 'identity') {
      req.resume();
      return next(new UnsupportedMediaTypeError(`Compressed request bodies (${encoding}) are not accepted here`));
    }
    const tooLarge = () => new PayloadTooLargeError('The request body is too large');
    if (Number(req.headers['content-length'] ?? 0) > limitBytes) {
      req.resume();
      return next(tooLarge());
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limitBytes) {
        failed = true;
        next(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('error', (err) => {
      if (!failed) next(err);
      failed = true;
    });
    req.on('end', () => {
      if (failed) return;
      const raw = Buffer.concat(chunks, size);
      // Kept for the calls an agent signs (enrollment, sessions): the signature covers these bytes.
      res.locals.agentRawBody = raw;
      const text = raw.toString('utf8');
      try {
        req.body = text.length === 0 ? {} : (JSON.parse(text) as unknown);
      } catch {
        next(new BadRequestError('The request body is not valid JSON'));
        return;
      }
      next();
    });
  };
}

/** res.json without the ETag and freshness work: an agent never caches an answer. */
export function sendAgentJson(res: Response, status: number, body: unknown): void {
  sendSignedAgentJson(res, status, body, null);
}

/**
 * Who an answer is for: its signature (or, within a session, its MAC) binds it to this agent and
 * to the request it answers.
 */
export interface AnswerContext {
  /** Outside sessions (enrollment, session opening): the master's Ed25519 key signs. */
  key?: KeyObject;
  /** Within a session: the session key MACs (session-crypto.ts). */
  mac?: Buffer;
  path: string;
  /** The agent's key fingerprint. */
  agent: string;
  /** The nonce the agent sent with its request. */
  nonce: string;
}

/** An answer to an agent, signed (or MAC'd in a session) over the status, route, agent, nonce and body. */
export function sendSignedAgentJson(res: Response, status: number, body: unknown, to: AnswerContext | null): void {
  const text = JSON.stringify(body);
  if (to?.mac || to?.key) {
    const parts = { status, path: to.path, agent: to.agent, nonce: to.nonce, body: text };
    if (to.mac) res.setHeader(ANSWER_MAC_HEADER, macAnswer(to.mac, parts));
    else if (to.key) res.setHeader(SIGNATURE_HEADER, signAnswer(to.key, parts));
  }
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}
