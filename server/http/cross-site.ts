import type { Request, RequestHandler, Response } from 'express';
import type { Logger } from '../../lib/logger.js';
import { ForbiddenError } from '../errors.js';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

function originOf(text: string): string | null {
  try {
    const url = new URL(text);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.origin : null;
  } catch {
    return null;
  }
}

/**
 * The master's own origin for this request: the scheme it answered on and the Host header. A
 * browser puts in Host the name it used to reach the master (localhost, an IP, a DNS name), so
 * every way of reaching the console is its own origin, and a page of any other origin is not.
 */
export function ownOrigin(req: Request): string | null {
  const host = req.get('host');
  return host ? originOf(`${req.protocol}://${host}`) : null;
}

/**
 * What shows that a browser sent this request on behalf of a page of another origin, or null.
 * Browsers send Origin with every POST, PUT and DELETE (also same-origin ones), and Sec-Fetch-Site
 * to secure and loopback origins; scripts (curl, API clients) send neither, and stay welcome.
 * "same-site" is another origin too: another port of the same host is another application.
 */
export function crossSiteEvidence(req: Request): string | null {
  const origin = req.get('origin');
  const own = ownOrigin(req);
  if (origin !== undefined && (own === null || originOf(origin) !== own)) return `Origin: ${origin.slice(0, 200)}`;
  const site = req.get('sec-fetch-site');
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return `Sec-Fetch-Site: ${site.slice(0, 40)}`;
  return null;
}

/**
 * Refuses every state-changing request a browser sends for a page of another site, whatever its
 * credentials (cached HTTP Basic credentials go with such requests as readily as cookies), unless
 * it carries a token only the console's own pages have (a proxy in front of the master may change
 * what the master sees of the origin; its forms carry the token).
 */
export function refuseCrossSite(deps: { log: Logger; hasConsoleToken: (req: Request, res: Response) => Promise<boolean> }): RequestHandler {
  return async (req, res, next) => {
    if (SAFE_METHODS.has(req.method)) return next();
    const evidence = crossSiteEvidence(req);
    if (evidence === null || (await deps.hasConsoleToken(req, res))) return next();
    deps.log.warn('cross-site request refused', { method: req.method, path: req.path, from: evidence, ip: req.ip ?? null });
    throw new ForbiddenError(`This request came from another site (${evidence}) and was refused; use the console itself, or an API client`);
  };
}
