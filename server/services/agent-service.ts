import { EventEmitter } from 'node:events';
import { agentRequestSignatureMatches, parseAgentPublicKey } from '../../lib/agent-keys.js';
import type { AgentCommand, AgentStatus, CommandResult, ReportResponse, SessionRequest, SessionResponse } from '../../lib/agent-protocol.js';
import { ConflictError, errorMessage, ValidationError } from '../../lib/errors.js';
import { sealSessionKey } from '../../lib/session-crypto.js';
import type { Logger } from '../../lib/logger.js';
import { AgentSessions } from '../agent-sessions.js';
import type { CommandsRepo } from '../db/commands-repo.js';
import type { PackagesRepo } from '../db/packages-repo.js';
import type { SpentSet } from '../cluster/spent-set.js';
import type { Database } from '../db/database.js';
import { ServersRepo } from '../db/servers-repo.js';
import { OffsetFilter, offsetFrom } from '../clock-offset.js';
import { deriveKey } from '../derived-keys.js';
import type { Command, SlaveRecord } from '../domain.js';
import { AuthenticationError, ForbiddenError, TooManyRequestsError } from '../errors.js';
import type { MasterKey } from '../master-key.js';
import type { AdmissionService } from './admission-service.js';

export interface AgentServiceOptions {
  /** Mailbox sessions served per minute, all agents together (0: no cap). */
  mailboxSessionsPerMinute: number;
  /** Trusted network: a mode or address an accepted agent reports is taken without asking the administrator. */
  autoAccept: boolean;
  /** Where used session challenges are kept (in memory, or shared by several masters). */
  spentChallenges?: SpentSet;
}

/** The most an agent takes as time left (lib/agent-protocol.ts): a longer deadline is sent as this. */
const MAX_TIME_LEFT_SECONDS = 366 * 24 * 3600;

export function toAgentCommand(c: Command): AgentCommand {
  return {
    id: c.id,
    type: c.type,
    package: { sha256: c.packageSha256, payloadSha256: c.payloadSha256, manifestSha256: c.manifestSha256, size: c.packageSize, product: c.product, version: c.version, name: c.packageName },
    allowDowngrade: c.allowDowngrade,
    timeLeftSeconds: c.deadlineAt ? Math.min(MAX_TIME_LEFT_SECONDS, Math.max(0, Math.ceil((Date.parse(c.deadlineAt) - Date.now()) / 1000))) : null,
  };
}

/**
 * The master's side of the agent protocol: sessions, status reports and command results, mailbox
 * answers. Emits "command" with each command whose state changed, so the operations engine can
 * follow.
 */
export class AgentService extends EventEmitter {
  private windowStart = 0;
  private windowCount = 0;
  /** Who an agent is, by server id, so a poll needs no database read to authenticate. */
  private readonly identities = new Map<number, SlaveRecord>();
  /**
   * Moves at every forget(): a server read before a removal (queries run side by side on
   * PostgreSQL) must not go back into the cache after it, or a removed agent would stay trusted.
   */
  private identitiesEpoch = 0;
  /** Status reports not yet written: one transaction a second instead of a write per poll. */
  private readonly pendingStatus = new Map<number, { status: AgentStatus; at: string }>();
  /** The status last written for each server; an unchanged one only moves last_seen. */
  private readonly writtenStatus = new Map<number, string>();
  /** Clock offsets measured and not yet written, and the last one written per server. */
  private readonly pendingOffsets = new Map<number, number>();
  private readonly writtenOffsets = new Map<number, number | null>();
  private readonly offsetFilter = new OffsetFilter();
  private flushTimer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  /**
   * Servers that may have queued work. An idle poll (nearly all of them) then needs no database
   * query; null until loaded, when every poll asks the database.
   */
  private mayHaveWork: Set<number> | null = null;
  private sessions: AgentSessions | null = null;

  constructor(
    private readonly db: Database,
    private readonly servers: ServersRepo,
    private readonly commands: CommandsRepo,
    private readonly packages: PackagesRepo,
    private readonly admission: AdmissionService,
    private readonly key: () => Promise<MasterKey>,
    private readonly log: Logger,
    private readonly options: AgentServiceOptions,
  ) {
    super();
  }

  private async sessionKeys(): Promise<AgentSessions> {
    if (!this.sessions) {
      const { privateKey } = await this.key();
      this.sessions = new AgentSessions(deriveKey(privateKey, 'agent-session'), deriveKey(privateKey, 'enroll-challenge'), deriveKey(privateKey, 'agent-session-key'), this.options.spentChallenges);
    }
    return this.sessions;
  }

  async challenge(): Promise<string> {
    return (await this.sessionKeys()).challenge();
  }

  /**
   * Opens a session for an agent that signed a fresh challenge with its key: a token when it is a
   * server of the domain, or where its enrollment stands. Any other key is refused.
   */
  async openSession(request: SessionRequest, proof: { method: string; path: string; nonce: string; body: Buffer; signature: string | undefined }): Promise<SessionResponse> {
    const epoch = this.identitiesEpoch;
    const sessions = await this.sessionKeys();
    if (!(await sessions.spendChallenge(request.challenge))) throw new ConflictError('The session challenge is stale, used, or was not made by this master; ask for a new one');
    const server = await this.servers.findByName(request.name);
    const known = server && server.keyFingerprint === request.keyFingerprint && server.publicKey ? server.publicKey : null;
    const asked = known ? null : await this.admission.findRequest(request.name, request.keyFingerprint);
    const publicKey = parseAgentPublicKey(known ?? asked?.publicKey ?? '');
    if (!publicKey || !agentRequestSignatureMatches(publicKey, proof, proof.signature)) {
      this.log.warn('agent session refused', { name: request.name, key: request.keyFingerprint });
      throw new AuthenticationError(`This agent is not a server of the domain: it was removed from the console, or "${request.name}" was accepted with another key; enroll it again with an enrollment token`);
    }
    if (server && known) {
      if (epoch === this.identitiesEpoch) this.identities.set(server.id, server);
      const { token, expiresInSeconds } = sessions.issue(server.id, request.keyFingerprint);
      const sealed = sealSessionKey(request.exchangeKey, token, sessions.sessionKey(token));
      if (!sealed) throw new ValidationError('The session exchange key must be an X25519 public key (32 bytes, base64)');
      return { state: 'accepted', serverId: server.id, token, expiresInSeconds, ...sealed, serverTime: Date.now(), message: 'session opened' };
    }
    const state = asked?.state ?? 'pending';
    return {
      state, serverId: null, token: null, expiresInSeconds: null, exchangeKey: null, sealedKey: null, serverTime: null,
      message: state === 'rejected' ? 'the administrator rejected this server' : `waiting for the administrator to accept "${request.name}" (New servers); key fingerprint ${request.keyFingerprint}`,
    };
  }

  /**
   * "Bearer <session token>" → the slave and the session's key (its calls and answers carry MACs
   * with it), or a 401 that says what to do. Reads no body and, mostly, no database.
   */
  async authenticate(header: string | undefined): Promise<{ server: SlaveRecord; sessionKey: Buffer }> {
    const token = AgentSessions.read(header);
    if (!token) throw new AuthenticationError('Agent session required (Authorization: Bearer <session token>)');
    const epoch = this.identitiesEpoch;
    const server = this.identities.get(token.serverId) ?? (await this.servers.findById(token.serverId));
    if (server && epoch === this.identitiesEpoch) this.identities.set(server.id, server);
    const sessions = await this.sessionKeys();
    const verdict = server?.keyFingerprint ? sessions.check(token, server.keyFingerprint) : 'invalid';
    if (verdict !== 'ok' || !server) {
      if (verdict === 'invalid') this.log.warn('agent session refused', { serverId: token.serverId });
      throw new AuthenticationError(verdict === 'expired' ? 'The agent session expired; open a new one' : 'The agent session is not valid (the server was removed, or its key changed); open a new one');
    }
    return { server, sessionKey: sessions.sessionKey(token.text) };
  }

  /** Loads which servers have open work (once, at start). */
  async loadWorkIndex(): Promise<void> {
    this.mayHaveWork = new Set(await this.commands.serversWithOpenWork());
  }

  /** Called whenever commands are queued for these servers. */
  markWork(serverIds: number[]): void {
    for (const id of serverIds) this.mayHaveWork?.add(id);
  }

  /** Told when this service changed a server's identity (its requested mode), for the other masters. */
  onIdentityChanged: (serverId: number) => void = () => undefined;

  /** Drops every cached identity (this master may have missed the others' changes). */
  forgetAll(): void {
    for (const id of [...this.identities.keys()]) this.forget(id);
  }

  /** Drops what is known of a server (removed from the console, or enrolled again). */
  forget(serverId: number): void {
    this.identitiesEpoch++;
    this.identities.delete(serverId);
    this.pendingStatus.delete(serverId);
    this.writtenStatus.delete(serverId);
    this.pendingOffsets.delete(serverId);
    this.writtenOffsets.delete(serverId);
    this.offsetFilter.forget(serverId);
  }

  /** Writes the status reports received since the last flush, in one transaction. */
  flush(): Promise<void> {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    const batch = [...this.pendingStatus.entries()];
    this.pendingStatus.clear();
    const offsets = [...this.pendingOffsets.entries()];
    this.pendingOffsets.clear();
    if (batch.length === 0 && offsets.length === 0) return this.flushing;
    const changed: [number, AgentStatus, string][] = [];
    const seenOnly: number[] = [];
    for (const [id, { status }] of batch) {
      const text = JSON.stringify(status);
      if (this.writtenStatus.get(id) === text) seenOnly.push(id);
      else {
        changed.push([id, status, text]);
        this.writtenStatus.set(id, text);
      }
    }
    const at = new Date().toISOString();
    this.flushing = this.flushing.then(() => this.db.transaction(async (tx) => {
      const repo = new ServersRepo(tx);
      for (const [id, status] of changed) await repo.updateStatus(id, status, at);
      await repo.touch(seenOnly, at);
      for (const [id, offset] of offsets) await repo.setClockOffset(id, offset);
    })).catch((err: unknown) => {
      for (const [id] of changed) this.writtenStatus.delete(id);
      for (const [id] of offsets) this.writtenOffsets.delete(id);
      this.log.error('could not record agent status', { error: errorMessage(err), servers: batch.length });
    });
    return this.flushing;
  }

  private recordStatus(serverId: number, status: AgentStatus): void {
    this.pendingStatus.set(serverId, { status, at: new Date().toISOString() });
    this.flushSoon();
  }

  private flushSoon(): void {
    if (this.pendingStatus.size >= 1000) void this.flush();
    else if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => void this.flush(), 1000);
      this.flushTimer.unref();
    }
  }

  /** Throttles mailbox sessions (fixed one-minute window), answering 429 with a retry delay. */
  admitMailboxSession(now = Date.now()): void {
    const cap = this.options.mailboxSessionsPerMinute;
    if (cap <= 0) return;
    if (now - this.windowStart >= 60_000) {
      this.windowStart = now;
      this.windowCount = 0;
    }
    if (++this.windowCount > cap) {
      const retryAfter = Math.ceil((this.windowStart + 60_000 - now) / 1000);
      throw Object.assign(new TooManyRequestsError(`The master serves at most ${cap} mailbox sessions a minute; call again in ${retryAfter} s`), { retryAfter });
    }
  }

  /**
   * Keeps the offset of the slave's clock that a call showed (its `agentTime`, under the call's
   * MAC), written with the next status flush, and only when it really moved (OffsetFilter): an
   * idle poll costs no write of its own, also when calls arrive late.
   */
  private recordClock(server: SlaveRecord, agentTime: number, receivedAt: number): void {
    const measured = offsetFrom(agentTime, receivedAt);
    if (measured === null) return;
    const written = this.writtenOffsets.has(server.id) ? this.writtenOffsets.get(server.id) : server.clockOffsetMs;
    const offset = this.offsetFilter.next(server.id, measured, written, receivedAt);
    if (offset === null) return;
    this.writtenOffsets.set(server.id, offset);
    this.pendingOffsets.set(server.id, offset);
    this.flushSoon();
  }

  /**
   * A heartbeat, a mailbox call or a result delivery: records status (and the slave's clock, when
   * the call says what it reads), applies results, hands out work.
   */
  async report(server: SlaveRecord, status: AgentStatus, results: CommandResult[], agentTime?: number): Promise<ReportResponse> {
    if (status.name !== server.name) throw new ForbiddenError(`This agent is enrolled as "${server.name}", not "${status.name}"`);
    const receivedAt = Date.now();
    const now = new Date(receivedAt).toISOString();
    this.recordStatus(server.id, status);
    if (agentTime !== undefined) this.recordClock(server, agentTime, receivedAt);
    await this.noteWhereabouts(server, status);
    const acknowledged: string[] = [];
    for (const result of results) {
      if (await this.applyResult(server, result)) acknowledged.push(result.commandId);
    }
    const drop = await this.deletedButStaged(status);
    // The accepted mode decides, never the one reported: a mailbox agent cannot make the master call out.
    if (server.mode !== 'mailbox') return { acknowledged, commands: [], callAgainInSeconds: null, ...drop };
    if (this.mayHaveWork && !this.mayHaveWork.has(server.id)) return { acknowledged, commands: [], callAgainInSeconds: null, ...drop };
    const open = await this.commands.openForServer(server.id);
    if (open.length === 0) this.mayHaveWork?.delete(server.id);
    for (const c of open.filter((o) => o.state === 'queued')) {
      await this.commands.update(c.id, { state: 'delivered', deliveredAt: now }, ['queued']);
      this.emit('command', c.id);
    }
    // Work handed out: come back soon to report progress; otherwise the agent's own rhythm.
    return { acknowledged, commands: open.map(toAgentCommand), callAgainInSeconds: open.length > 0 ? 1 : null, ...drop };
  }

  /** The packages a slave keeps staged though the administrator deleted them: it is told to drop them. */
  private async deletedButStaged(status: AgentStatus): Promise<{ drop?: string[] }> {
    if (status.staged.length === 0) return {};
    const digests = status.staged.map((s) => s.sha256).slice(0, 100);
    const known = await this.packages.knownSha256(digests);
    const drop = digests.filter((d) => !known.has(d));
    return drop.length > 0 ? { drop } : {};
  }

  /**
   * A mode or address the agent reports that differs from the accepted one is recorded as a
   * request for the administrator (taken at once on a trusted network, --auto-accept); until then
   * the master goes on using the accepted ones.
   */
  private async noteWhereabouts(server: SlaveRecord, status: AgentStatus): Promise<void> {
    const reported = { mode: status.mode, address: status.mode === 'bidirectional' ? status.address : null };
    const asked = server.requestedChange;
    if (reported.mode === server.mode && reported.address === server.address) {
      if (asked) {
        await this.servers.setRequestedChange(server.id, null);
        this.forget(server.id);
        this.onIdentityChanged(server.id);
      }
      return;
    }
    if (asked && asked.mode === reported.mode && asked.address === reported.address) return;
    await this.servers.setRequestedChange(server.id, reported);
    this.forget(server.id);
    this.onIdentityChanged(server.id);
    if (this.options.autoAccept) {
      await this.servers.decideChange(server.id, true, 'auto-accept', new Date().toISOString());
      this.log.info('server changed its mode or address (auto-accept)', { serverId: server.id, name: server.name, mode: reported.mode, address: reported.address });
    } else {
      this.log.warn('server asks to change its mode or address: waiting for the administrator', { serverId: server.id, name: server.name, mode: reported.mode, address: reported.address });
    }
  }

  private async applyResult(server: SlaveRecord, result: CommandResult): Promise<boolean> {
    const command = await this.commands.findById(result.commandId);
    if (!command || command.serverId !== server.id) {
      // Unknown (or another server's) id: acknowledge so the agent stops resending it.
      this.log.warn('result for an unknown command', { serverId: server.id, commandId: result.commandId });
      return true;
    }
    if (!['queued', 'delivered', 'running'].includes(command.state)) return true;
    // The report's times are the master's: when it heard that the slave started (or, for a result
    // that comes first as final, when it handed the command over) and when it heard the result.
    // The times in the result are the slave's clock, and are ignored.
    const now = new Date().toISOString();
    const startedAt = command.startedAt ?? (result.state === 'running' ? now : command.deliveredAt ?? now);
    const common = { message: result.message, versionBefore: result.versionBefore, versionAfter: result.versionAfter, startedAt };
    const changed = result.state === 'running'
      ? await this.commands.update(command.id, { ...common, state: 'running' }, ['queued', 'delivered', 'running'])
      : await this.commands.update(command.id, { ...common, state: result.state === 'failed' ? 'failed' : 'succeeded', finishedAt: now }, ['queued', 'delivered', 'running']);
    if (changed) {
      if (result.state !== 'running') this.log.info('command finished', { commandId: command.id, server: server.name, type: command.type, state: result.state, version: command.version, message: result.message.slice(0, 500) });
      this.emit('command', command.id);
    }
    return true;
  }

  mayDownload(server: SlaveRecord, sha256: string): Promise<boolean> {
    return this.commands.serverMayDownload(server.id, sha256);
  }
}
