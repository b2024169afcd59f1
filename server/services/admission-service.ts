import type { EnrollRequest } from '../../lib/agent-protocol.js';
import { keyFingerprint, parseAgentPublicKey } from '../../lib/agent-keys.js';
import { NotFoundError, ValidationError } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import type { Database } from '../db/database.js';
import { EnrollTokensRepo } from '../db/enroll-tokens-repo.js';
import { ServerRequestsRepo, ServersRepo } from '../db/servers-repo.js';
import type { EnrollToken, ServerRequest } from '../domain.js';
import { AuthenticationError, ForbiddenError, TooManyRequestsError } from '../errors.js';
import { hashToken, randomToken } from '../secrets.js';
import type { SettingsService } from './settings-service.js';

export interface AdmissionOptions {
  /** New names are accepted at once (trusted networks); a known name with a new key never is. */
  autoAccept: boolean;
  /** Enrollments waiting at once; more are refused until the administrator decides. */
  maxPending: number;
}

/** What one holder of the enrollment token may queue: per address it calls from, per server name. */
export const MAX_PENDING_PER_ADDRESS = 20;
export const MAX_PENDING_PER_NAME = 5;

/** How an enrollment authenticated itself: the domain's token, or a one-time token for one name. */
export type EnrollCredential = { kind: 'domain' } | { kind: 'one-time'; token: EnrollToken };

export interface EnrollOutcome {
  state: 'pending' | 'accepted' | 'rejected';
  serverId: number | null;
  keyFingerprint: string;
  message: string;
}

const DAY_MS = 24 * 3600_000;

/**
 * Admission of servers, as Mender admits devices: an enrollment never replaces the identity of a
 * server of the domain. A new name (or a known name from another key) waits as a request until
 * the administrator accepts or rejects it; a one-time token made for a name enrolls that name once,
 * accepted at once, because the administrator chose it beforehand.
 */
export class AdmissionService {
  /** Told when a server's identity changed or it was admitted, so cached credentials are dropped. */
  onAdmitted: (serverId: number) => void = () => undefined;
  private readonly servers: ServersRepo;
  private readonly requests: ServerRequestsRepo;
  private readonly tokens: EnrollTokensRepo;

  constructor(private readonly db: Database, private readonly settings: SettingsService, private readonly options: AdmissionOptions, private readonly log: Logger) {
    this.servers = new ServersRepo(db);
    this.requests = new ServerRequestsRepo(db);
    this.tokens = new EnrollTokensRepo(db);
  }

  /** The token from "Authorization: Bearer <token>", checked before the request body is read. */
  async checkEnrollToken(header: string | undefined, now = Date.now()): Promise<EnrollCredential> {
    const match = /^Bearer ([A-Za-z0-9_-]{16,200})$/.exec(header ?? '');
    if (!match?.[1]) throw new AuthenticationError('The enrollment token is missing (Authorization: Bearer <token>)');
    const token = match[1];
    if (await this.settings.enrollTokenMatches(token)) return { kind: 'domain' };
    const oneTime = await this.tokens.findByHash(hashToken(token));
    if (oneTime && oneTime.usedAt === null && Date.parse(oneTime.expiresAt) > now) return { kind: 'one-time', token: oneTime };
    if (oneTime?.usedAt) throw new AuthenticationError(`This one-time enrollment token was already used (${oneTime.usedAt}); create a new one in the console (New servers)`);
    if (oneTime) throw new AuthenticationError(`This one-time enrollment token expired on ${oneTime.expiresAt}; create a new one in the console (New servers)`);
    throw new AuthenticationError('The enrollment token is wrong (see the master console: Settings, or New servers for one-time tokens)');
  }

  async enroll(credential: EnrollCredential, request: EnrollRequest, from: string | null): Promise<EnrollOutcome> {
    const { status } = request;
    const key = parseAgentPublicKey(request.publicKey);
    if (!key) throw new ValidationError('The agent public key is not an Ed25519 public key in PEM');
    if (status.mode === 'bidirectional' && !status.address) throw new ValidationError('A bidirectional agent must give the address the master calls it at');
    const fingerprint = keyFingerprint(key);
    const at = new Date().toISOString();
    const admission = {
      name: status.name, mode: status.mode, address: status.mode === 'bidirectional' ? status.address : null, product: status.product, version: status.version,
      publicKey: request.publicKey, keyFingerprint: fingerprint, requestedFrom: from, enrolledAt: at, at,
    };
    const done = (state: EnrollOutcome['state'], serverId: number | null, message: string): EnrollOutcome => ({ state, serverId, keyFingerprint: fingerprint, message });

    if (credential.kind === 'one-time') {
      const { token } = credential;
      if (token.name !== status.name) throw new ForbiddenError(`This one-time enrollment token enrolls "${token.name}", not "${status.name}"`);
      const serverId = await this.db.transaction(async (tx) => {
        if (!(await new EnrollTokensRepo(tx).use(token.id, at))) return null;
        const id = await new ServersRepo(tx).admit({ ...admission, acceptedBy: `one-time token of ${token.createdBy}` });
        await new EnrollTokensRepo(tx).setServer(token.id, id);
        return id;
      });
      if (serverId === null) throw new AuthenticationError('This one-time enrollment token was already used; create a new one in the console (New servers)');
      this.onAdmitted(serverId);
      this.log.info('server enrolled with a one-time token', { serverId, name: status.name, key: fingerprint, from, tokenBy: token.createdBy });
      return done('accepted', serverId, `accepted as "${status.name}" (one-time token)`);
    }

    const existing = await this.servers.findByName(status.name);
    if (existing && existing.keyFingerprint === fingerprint) return done('accepted', existing.id, `already accepted as "${status.name}"`);
    const asked = await this.requests.find(status.name, fingerprint);
    if (asked?.state === 'rejected') return done('rejected', null, `the administrator rejected this server (${asked.decidedAt ?? ''})`);
    if (asked) return done('pending', null, waiting(status.name, fingerprint));
    if (!existing && this.options.autoAccept) {
      // Insert only: of two agents racing under one new name, the second finds the name taken and
      // its enrollment waits for the administrator like any known name with another key.
      const serverId = await this.servers.insertNew({ ...admission, acceptedBy: 'auto-accept' });
      if (serverId !== null) {
        this.onAdmitted(serverId);
        this.log.info('server enrolled (auto-accept)', { serverId, name: status.name, key: fingerprint, from });
        return done('accepted', serverId, `accepted as "${status.name}" (auto-accept)`);
      }
    }
    // Counted and inserted in one transaction: enrollments arriving together cannot all slip under a bound.
    await this.db.transaction(async (tx) => {
      const requests = new ServerRequestsRepo(tx);
      if ((await requests.countPending()) >= this.options.maxPending) {
        throw new TooManyRequestsError(`${this.options.maxPending} servers already wait for admission: the administrator must accept or reject some first`);
      }
      const queued = await requests.countPendingBy(from, status.name);
      if (queued.fromAddress >= MAX_PENDING_PER_ADDRESS) {
        throw new TooManyRequestsError(`${MAX_PENDING_PER_ADDRESS} enrollments from ${from ?? 'this address'} already wait for admission: the administrator must accept or reject them first`);
      }
      if (queued.named >= MAX_PENDING_PER_NAME) {
        throw new TooManyRequestsError(`${MAX_PENDING_PER_NAME} enrollments under the name "${status.name}" already wait for admission: the administrator must accept or reject them first`);
      }
      await requests.insert({
        name: admission.name, mode: admission.mode, address: admission.address, product: admission.product, version: admission.version,
        publicKey: admission.publicKey, keyFingerprint: fingerprint, requestedFrom: from, requestedAt: at,
      });
    });
    if (existing) this.log.warn('enrollment under the name of a server of the domain, with another key: waiting for the administrator', { name: status.name, key: fingerprint, known: existing.keyFingerprint, from });
    else this.log.info('new server waiting for admission', { name: status.name, key: fingerprint, from });
    return done('pending', null, waiting(status.name, fingerprint));
  }

  countPending(): Promise<number> {
    return this.requests.countPending();
  }

  listRequests(state?: 'pending' | 'rejected'): Promise<ServerRequest[]> {
    return this.requests.list(state);
  }

  /** Accepts a request: a new server, or a known server's new key (its id and history stay). */
  async accept(requestId: number, user: string): Promise<number> {
    const request = await this.requests.findById(requestId);
    if (!request) throw new NotFoundError(`There is no enrollment request ${requestId}`);
    const serverId = await this.db.transaction(async (tx) => {
      const id = await new ServersRepo(tx).admit({ ...request, acceptedBy: user, enrolledAt: request.requestedAt, at: new Date().toISOString() });
      await new ServerRequestsRepo(tx).delete(request.id);
      return id;
    });
    this.onAdmitted(serverId);
    this.log.info('server accepted', { serverId, name: request.name, key: request.keyFingerprint, user, previousState: request.state });
    return serverId;
  }

  async reject(requestId: number, user: string): Promise<ServerRequest> {
    const request = await this.requests.findById(requestId);
    if (!request) throw new NotFoundError(`There is no enrollment request ${requestId}`);
    await this.requests.reject(requestId, user, new Date().toISOString());
    this.log.info('server rejected', { name: request.name, key: request.keyFingerprint, user });
    return request;
  }

  /** Rejects every enrollment waiting from one address (a flood from one token holder); how many. */
  async rejectFrom(address: string, user: string): Promise<number> {
    const count = await this.requests.rejectFrom(address, user, new Date().toISOString());
    this.log.info('enrollments rejected by address', { from: address, count, user });
    return count;
  }

  /** Forgets a request (a rejected agent may then ask again). */
  async deleteRequest(requestId: number, user: string): Promise<void> {
    const request = await this.requests.findById(requestId);
    if (!request || !(await this.requests.delete(requestId))) throw new NotFoundError(`There is no enrollment request ${requestId}`);
    this.log.info('enrollment request deleted', { name: request.name, key: request.keyFingerprint, user });
  }

  async decideChange(serverId: number, accept: boolean, user: string): Promise<void> {
    const server = await this.servers.findById(serverId);
    if (!server?.requestedChange || server.requestedChange.state !== 'pending') throw new NotFoundError(`The server with id ${serverId} asks for no change`);
    await this.servers.decideChange(serverId, accept, user, new Date().toISOString());
    this.onAdmitted(serverId);
    this.log.info(accept ? 'server change accepted' : 'server change rejected', { serverId, name: server.name, mode: server.requestedChange.mode, address: server.requestedChange.address, user });
  }

  /** A one-time token for `name`, valid `validForMs`; the token is returned once and only its hash kept. */
  async createToken(name: string, validForMs: number, user: string): Promise<{ token: string; record: EnrollToken }> {
    if (!Number.isFinite(validForMs) || validForMs <= 0 || validForMs > 365 * DAY_MS) throw new ValidationError('A one-time token is valid from 1 minute to 365 days');
    const token = randomToken(32);
    const now = new Date();
    const id = await this.tokens.insert({ name, tokenHash: hashToken(token), createdBy: user, createdAt: now.toISOString(), expiresAt: new Date(now.getTime() + validForMs).toISOString() });
    this.log.info('one-time enrollment token created', { id, name, user, validForHours: Math.round(validForMs / 3600_000) });
    const record = (await this.tokens.list()).find((t) => t.id === id) as EnrollToken;
    return { token, record };
  }

  listTokens(): Promise<EnrollToken[]> {
    return this.tokens.list();
  }

  async revokeToken(id: number, user: string): Promise<void> {
    if (!(await this.tokens.delete(id))) throw new NotFoundError(`There is no one-time token ${id}`);
    this.log.info('one-time enrollment token deleted', { id, user });
  }

  /** For an agent that is not (or no longer) a server of the domain: where its enrollment stands. */
  findRequest(name: string, fingerprint: string): Promise<ServerRequest | null> {
    return this.requests.find(name, fingerprint);
  }
}

function waiting(name: string, fingerprint: string): string {
  return `waiting for the administrator to accept "${name}" in the master console (New servers); key fingerprint ${fingerprint}`;
}
