import { EventEmitter } from 'node:events';
import type { AgentCommand, AgentStatus, CommandResult, EnrollRequest, EnrollResponse, ReportResponse } from '../../lib/agent-protocol.js';
import { ValidationError } from '../../lib/errors.js';
import type { CommandsRepo } from '../db/commands-repo.js';
import type { Database } from '../db/database.js';
import { ServersRepo } from '../db/servers-repo.js';
import type { Command, SlaveRecord } from '../domain.js';
import { AuthenticationError, ForbiddenError, TooManyRequestsError } from '../errors.js';
import { errorMessage } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import type { MasterKey } from '../master-key.js';
import { hashToken, randomToken, tokenMatches } from '../secrets.js';
import type { SettingsService } from './settings-service.js';

export interface AgentServiceOptions {
  /** Mailbox sessions served per minute, all agents together (0: no cap). */
  mailboxSessionsPerMinute: number;
}

export function toAgentCommand(c: Command): AgentCommand {
  return {
    id: c.id,
    type: c.type,
    package: { sha256: c.packageSha256, payloadSha256: c.payloadSha256, size: c.packageSize, product: c.product, version: c.version, name: c.packageName },
    allowDowngrade: c.allowDowngrade,
  };
}

/**
 * The master's side of the agent protocol: enrollment, agent credentials, status reports and
 * command results, mailbox answers. Emits "command" with each command whose state changed, so
 * the operations engine can follow.
 */
export class AgentService extends EventEmitter {
  private windowStart = 0;
  private windowCount = 0;
  /** Who an agent is, by server id, so a poll needs no database read to authenticate. */
  private readonly identities = new Map<number, SlaveRecord>();
  /** Status reports not yet written: one transaction a second instead of a write per poll. */
  private readonly pendingStatus = new Map<number, { status: AgentStatus; at: string }>();
  /** The status last written for each server; an unchanged one only moves last_seen. */
  private readonly writtenStatus = new Map<number, string>();
  private flushTimer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  /**
   * Servers that may have queued work. An idle poll (nearly all of them) then needs no database
   * query; null until loaded, when every poll asks the database.
   */
  private mayHaveWork: Set<number> | null = null;

  constructor(
    private readonly db: Database,
    private readonly servers: ServersRepo,
    private readonly commands: CommandsRepo,
    private readonly settings: SettingsService,
    private readonly key: () => Promise<MasterKey>,
    private readonly log: Logger,
    private readonly options: AgentServiceOptions,
  ) {
    super();
  }

  async enroll(request: EnrollRequest): Promise<EnrollResponse> {
    if (!(await this.settings.enrollTokenMatches(request.token))) {
      this.log.warn('enrollment refused: wrong token', { name: request.name });
      throw new AuthenticationError('The enrollment token is wrong (see the master console, Settings)');
    }
    if (request.mode === 'bidirectional' && !request.address) throw new ValidationError('A bidirectional agent must give the address the master calls it at');
    const { token: _token, ...status } = request;
    const secret = randomToken(32);
    const existing = await this.servers.findByName(request.name);
    const serverId = await this.servers.upsertEnrollment(status, hashToken(secret), new Date().toISOString());
    this.forget(serverId);
    this.log.info(existing ? 'server enrolled again (new identity)' : 'server enrolled', { serverId, name: request.name, mode: request.mode, version: request.version });
    return { serverId, secret, masterPublicKey: (await this.key()).publicPem };
  }

  /** "Bearer <serverId>.<secret>" → the slave, or a 401 that says what to do. */
  async authenticate(header: string | undefined): Promise<SlaveRecord> {
    const match = /^Bearer (\d{1,12})\.([A-Za-z0-9_-]{20,200})$/.exec(header ?? '');
    if (!match) throw new AuthenticationError('Agent credentials required (Authorization: Bearer <id>.<secret>)');
    const id = Number(match[1]);
    const server = this.identities.get(id) ?? (await this.servers.findById(id));
    if (server) this.identities.set(id, server);
    if (!server || !tokenMatches(match[2] as string, server.secretHash)) {
      this.log.warn('agent credentials refused', { serverId: Number(match[1]) });
      throw new AuthenticationError('This agent is not enrolled: it was removed from the console, or its secret is wrong; enroll it again with the enrollment token');
    }
    return server;
  }

  /** Loads which servers have open work (once, at start). */
  async loadWorkIndex(): Promise<void> {
    this.mayHaveWork = new Set(await this.commands.serversWithOpenWork());
  }

  /** Called whenever commands are queued for these servers. */
  markWork(serverIds: number[]): void {
    for (const id of serverIds) this.mayHaveWork?.add(id);
  }

  /** Drops what is known of a server (removed from the console, or enrolled again). */
  forget(serverId: number): void {
    this.identities.delete(serverId);
    this.pendingStatus.delete(serverId);
    this.writtenStatus.delete(serverId);
  }

  /** Writes the status reports received since the last flush, in one transaction. */
  flush(): Promise<void> {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    const batch = [...this.pendingStatus.entries()];
    this.pendingStatus.clear();
    if (batch.length === 0) return this.flushing;
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
    })).catch((err: unknown) => {
      for (const [id] of changed) this.writtenStatus.delete(id);
      this.log.error('could not record agent status', { error: errorMessage(err), servers: batch.length });
    });
    return this.flushing;
  }

  private recordStatus(serverId: number, status: AgentStatus): void {
    this.pendingStatus.set(serverId, { status, at: new Date().toISOString() });
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

  /** A heartbeat, a mailbox call or a result delivery: records status, applies results, hands out work. */
  async report(server: SlaveRecord, status: AgentStatus, results: CommandResult[]): Promise<ReportResponse> {
    if (status.name !== server.name) throw new ForbiddenError(`This agent is enrolled as "${server.name}", not "${status.name}"`);
    const now = new Date().toISOString();
    this.recordStatus(server.id, status);
    const acknowledged: string[] = [];
    for (const result of results) {
      if (await this.applyResult(server, result)) acknowledged.push(result.commandId);
    }
    if (status.mode !== 'mailbox') return { acknowledged, commands: [], callAgainInSeconds: null };
    if (this.mayHaveWork && !this.mayHaveWork.has(server.id)) return { acknowledged, commands: [], callAgainInSeconds: null };
    const open = await this.commands.openForServer(server.id);
    if (open.length === 0) this.mayHaveWork?.delete(server.id);
    for (const c of open.filter((o) => o.state === 'queued')) {
      await this.commands.update(c.id, { state: 'delivered', deliveredAt: now }, ['queued']);
      this.emit('command', c.id);
    }
    // Work handed out: come back soon to report progress; otherwise the agent's own rhythm.
    return { acknowledged, commands: open.map(toAgentCommand), callAgainInSeconds: open.length > 0 ? 1 : null };
  }

  private async applyResult(server: SlaveRecord, result: CommandResult): Promise<boolean> {
    const command = await this.commands.findById(result.commandId);
    if (!command || command.serverId !== server.id) {
      // Unknown (or another server's) id: acknowledge so the agent stops resending it.
      this.log.warn('result for an unknown command', { serverId: server.id, commandId: result.commandId });
      return true;
    }
    if (!['queued', 'delivered', 'running'].includes(command.state)) return true;
    const common = { message: result.message, versionBefore: result.versionBefore, versionAfter: result.versionAfter, startedAt: result.startedAt };
    const changed = result.state === 'running'
      ? await this.commands.update(command.id, { ...common, state: 'running' }, ['queued', 'delivered', 'running'])
      : await this.commands.update(command.id, { ...common, state: result.state === 'failed' ? 'failed' : 'succeeded', finishedAt: result.finishedAt ?? new Date().toISOString() }, ['queued', 'delivered', 'running']);
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
