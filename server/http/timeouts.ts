import type { Request, RequestHandler, Response } from 'express';
import type { Logger } from '../../lib/logger.js';

/** How long a client answered before the end of its body may go on sending (dropped) before it is cut. */
const LINGER_MS = 3_000;
/** The send idle timeout of a request that did not pass requestTimeouts (the master's default). */
const DEFAULT_SEND_IDLE_MS = 60_000;

const deadlines = new WeakMap<Request, NodeJS.Timeout>();
const ownIdleHandling = new WeakSet<Request>();
const sendLimits = new WeakMap<Request, { idleMs: number; log: Logger }>();

/**
 * Time limits of every request except admitted uploads (see exemptUpload):
 * - the request must arrive whole within `requestMs`. Node's server.requestTimeout does this for
 *   every request alike and cannot be lifted for one route, so a value that lets a 4 GiB upload
 *   through a slow link would let a slow-loris client hold a small-body route (login, agent
 *   reports) for an hour. main.ts turns it off and this middleware sets it per request instead.
 * - with no byte moving either way for the server's idle timeout (server.timeout, main.ts), the
 *   connection is closed and logged. A package download has its own limit instead (watchSend,
 *   --send-idle-timeout): a client that stopped reading it releases its file and its memory.
 */
export function requestTimeouts(requestMs: number, log: Logger, sendIdleMs = DEFAULT_SEND_IDLE_MS): RequestHandler {
  const sendLimit = { idleMs: sendIdleMs, log };
  return (req, res, next) => {
    sendLimits.set(req, sendLimit);
    const deadline = setTimeout(() => {
      if (req.complete || req.socket.destroyed) return;
      log.warn('request too slow to arrive: connection closed', { method: req.method, path: req.path, seconds: requestMs / 1000 });
      if (res.headersSent) req.socket.destroy();
      else res.status(408).set('Connection', 'close').json({ error: `The request did not arrive whole within ${requestMs / 1000} s; send it again` });
    }, requestMs).unref();
    deadlines.set(req, deadline);
    // A body still arriving after the answer (e.g. a refused login) stays under the deadline. The
    // timer goes once the request is whole and answered, or its connection is gone: kept, it would
    // hold every refused stranger's request in memory for the whole deadline. (A request whose body
    // was never read emits no 'close' of its own, hence the socket's.)
    const clear = () => {
      clearTimeout(deadline);
      req.socket.off('close', clear);
    };
    req.socket.once('close', clear);
    res.once('close', () => {
      if (req.complete) clear();
    });
    // A listener here keeps Node from closing the socket itself, so the line can be logged first.
    res.on('timeout', () => {
      if (ownIdleHandling.has(req)) return;
      log.warn('connection idle: closed', { method: req.method, path: req.path, answered: res.headersSent, seconds: (req.socket.timeout ?? 0) / 1000 });
      req.socket.destroy();
    });
    next();
  };
}

/** An admitted upload may take as long as its bytes keep coming: it handles its idle timeout itself. */
export function exemptUpload(req: Request): void {
  clearTimeout(deadlines.get(req));
  ownIdleHandling.add(req);
}

/**
 * For an answer given before the request's body ended (a refused or stopped upload). Closing the
 * connection at once would make the client's TCP stack drop the answer (a reset while it still
 * sends), so what it still sends is read and dropped for a moment, then the connection is cut
 * if the body has not ended.
 */
export function closeAfterAnswer(req: Request, res: Response): void {
  res.once('close', () => {
    setTimeout(() => {
      if (!req.complete) req.socket.destroy();
    }, LINGER_MS).unref();
  });
}

export interface SendWatch {
  /** Data moved on: the client took what was sent so far (or room for more). */
  progress(bytes: number): void;
  stop(): void;
}

/**
 * A large answer (a package download) under its own time limit: when the client takes nothing
 * for the send idle timeout (--send-idle-timeout), the connection is closed and logged, and the
 * answer's stream, with its file, is destroyed. Without this a client that keeps its connection
 * open without reading would hold a socket and a file descriptor for as long as it likes. The
 * connection's own idle timeout no longer applies to this answer.
 */
export function watchSend(req: Request, res: Response): SendWatch {
  const limit = sendLimits.get(req);
  const idleMs = limit?.idleMs ?? DEFAULT_SEND_IDLE_MS;
  ownIdleHandling.add(req);
  let sent = 0;
  const timer = setTimeout(() => {
    if (res.writableFinished || req.socket.destroyed) return;
    limit?.log.warn('download stalled: connection closed', { method: req.method, path: req.path, sentBytes: sent, seconds: idleMs / 1000 });
    req.socket.destroy();
  }, idleMs).unref();
  return {
    progress(bytes) {
      sent += bytes;
      timer.refresh();
    },
    stop() {
      clearTimeout(timer);
    },
  };
}
