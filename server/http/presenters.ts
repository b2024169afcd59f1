import type { EnrollToken, ServerRequest, ServerView, StoredPackage } from '../domain.js';
import { PackageService } from '../services/package-service.js';

/** The JSON shapes of the REST API (documented in the README). */
export function packageJson(p: StoredPackage) {
  return {
    id: p.id,
    name: p.name,
    product: p.product,
    version: p.version,
    size: p.size,
    sha256: p.sha256,
    state: PackageService.displayState(p),
    signer: p.signer,
    chain: p.chain.map((c) => ({ subject: c.subject, issuer: c.issuer, notAfter: c.notAfter })),
    payload: p.payload,
    expires: p.expires,
    minVersion: p.minVersion,
    description: p.description,
    uploadedBy: p.uploadedBy,
    uploadedAt: p.uploadedAt,
  };
}

export function serverJson(s: ServerView) {
  return {
    id: s.id,
    name: s.name,
    role: s.role,
    mode: s.mode,
    status: s.status,
    product: s.product,
    version: s.version,
    lastSeen: s.lastSeen,
    address: s.address,
    staged: s.staged,
    freeDiskBytes: s.freeDiskBytes,
    keyFingerprint: s.keyFingerprint,
    requestedChange: s.requestedChange,
    clockOffsetMs: s.clockOffsetMs,
    clockWarning: s.clockWarning,
  };
}

export function serverRequestJson(r: ServerRequest) {
  return {
    id: r.id,
    name: r.name,
    state: r.state,
    mode: r.mode,
    address: r.address,
    product: r.product,
    version: r.version,
    keyFingerprint: r.keyFingerprint,
    requestedFrom: r.requestedFrom,
    requestedAt: r.requestedAt,
    decidedBy: r.decidedBy,
    decidedAt: r.decidedAt,
  };
}

export function enrollTokenJson(t: EnrollToken) {
  return { id: t.id, name: t.name, createdBy: t.createdBy, createdAt: t.createdAt, expiresAt: t.expiresAt, usedAt: t.usedAt, serverId: t.serverId };
}

export { formatBytes } from '../../lib/bytes.js';
