import { randomUUID } from 'node:crypto';
import { NotFoundError, ValidationError } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import { CommandsRepo } from '../db/commands-repo.js';
import type { Database } from '../db/database.js';
import { OperationsRepo } from '../db/operations-repo.js';
import type { PackagesRepo } from '../db/packages-repo.js';
import type { ServersRepo } from '../db/servers-repo.js';
import {
  newCommand, targetState, type Command, type CommandEvent, type Operation, type OperationAction, type OperationState, type SlaveRecord, type TargetCounts,
} from '../domain.js';
import { PackageService } from './package-service.js';
import { propagationBlocker } from './propagation-rules.js';
import type { SettingsService } from './settings-service.js';

export interface NewOperation {
  action: OperationAction;
  packageId: number;
  servers: number[] | 'all';
  allowDowngrade: boolean;
  user: string;
  retryOf?: number;
}

export interface OperationReport {
  operation: Operation;
  counts: TargetCounts;
  targets: (Command & { target: ReturnType<typeof targetState>; mode: SlaveRecord['mode'] | null; lastCall: string | null })[];
}

export interface OperationDeadlines {
  bidirectionalMs: number;
  mailboxMs: number;
}

export function emptyCounts(): TargetCounts {
  return { total: 0, pending: 0, running: 0, succeeded: 0, failed: 0, timedout: 0, cancelled: 0 };
}

export function countTargets(states: Record<string, number>): TargetCounts {
  const counts = emptyCounts();
  for (const [state, n] of Object.entries(states)) {
    counts[targetState(state as Command['state'])] += n;
    counts.total += n;
  }
  return counts;
}

/** Propagate and apply operations: who may run what, where, and what happened. */
export class OperationService {
  /** Called after an operation is created or changed, so the engine acts at once. */
  onChange: () => void = () => undefined;
  /** Called with the servers that got new work. */
  onQueued: (serverIds: number[]) => void = () => undefined;

  constructor(
    private readonly db: Database,
    private readonly packages: PackagesRepo,
    private readonly servers: ServersRepo,
    private readonly settings: SettingsService,
    private readonly deadlines: OperationDeadlines,
    private readonly log: Logger,
  ) {}

  private async targetsFor(selection: number[] | 'all'): Promise<SlaveRecord[]> {
    const all = await this.servers.list();
    if (selection === 'all') {
      if (all.length === 0) throw new ValidationError('There is no slave server in the domain yet: enroll an agent first');
      return all;
    }
    const ids = [...new Set(selection)];
    if (ids.length === 0) throw new ValidationError('Choose at least one server');
    const unknown = ids.filter((id) => !all.some((s) => s.id === id));
    if (unknown.length > 0) throw new ValidationError(`Unknown server id${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}`);
    return all.filter((s) => ids.includes(s.id));
  }

  async create(input: NewOperation): Promise<Operation> {
    const pkg = await this.packages.findById(input.packageId);
    if (!pkg || pkg.state !== 'valid') throw new ValidationError(`There is no valid update with id ${input.packageId}`);
    if (PackageService.displayState(pkg) === 'expired') throw new ValidationError(`The update "${pkg.name}" has expired (its certificate or its own expiry date passed); add a fresh package`);
    const blocker = propagationBlocker(pkg, await this.settings.productInfo());
    if (blocker) throw new ValidationError(blocker);
    const targets = await this.targetsFor(input.servers);
    const now = new Date();
    const at = now.toISOString();
    const id = await this.db.transaction(async (tx) => {
      const opId = await new OperationsRepo(tx).insert({
        action: input.action, packageId: pkg.id, packageName: pkg.name, product: pkg.product, version: pkg.version, allowDowngrade: input.allowDowngrade,
        state: 'running', createdBy: input.user, createdAt: at, finishedAt: null, retryOf: input.retryOf ?? null,
      });
      const commands = new CommandsRepo(tx);
      for (const server of targets) {
        const mailbox = server.mode === 'mailbox';
        await commands.insert(newCommand({
          id: randomUUID(), operationId: opId, server, pkg, type: input.action, allowDowngrade: input.allowDowngrade,
          // Bidirectional targets wait for a transfer slot; mailbox targets wait for their slave to call.
          state: mailbox ? 'queued' : 'held',
          message: mailbox ? 'waiting for the slave to call in' : 'waiting for a transfer slot',
          deadlineAt: mailbox ? new Date(now.getTime() + this.deadlines.mailboxMs).toISOString() : null,
          at,
        }));
      }
      return opId;
    });
    this.onQueued(targets.map((t) => t.id));
    this.log.info('operation started', { operationId: id, action: input.action, package: pkg.name, version: pkg.version, targets: targets.length, user: input.user });
    this.onChange();
    return (await new OperationsRepo(this.db).findById(id)) as Operation;
  }

  async report(id: number): Promise<OperationReport> {
    const operation = await new OperationsRepo(this.db).findById(id);
    if (!operation) throw new NotFoundError(`There is no operation ${id}`);
    const commands = await new CommandsRepo(this.db).forOperation(id);
    const servers = new Map((await this.servers.list()).map((s) => [s.id, s]));
    const counts = emptyCounts();
    const targets = commands.map((c) => {
      const server = c.serverId === null ? undefined : servers.get(c.serverId);
      const target = targetState(c.state);
      counts[target]++;
      counts.total++;
      return { ...c, target, mode: server?.mode ?? null, lastCall: server?.lastSeen ?? null };
    });
    return { operation, counts, targets };
  }

  history(report: OperationReport): Promise<CommandEvent[]> {
    return new CommandsRepo(this.db).events(report.targets.map((t) => t.id));
  }

  async list(filter: { state?: OperationState; limit: number; offset: number }): Promise<{ operations: (Operation & { counts: TargetCounts })[]; total: number }> {
    const { operations, total } = await new OperationsRepo(this.db).list(filter);
    const counts = await new CommandsRepo(this.db).stateCounts(operations.map((o) => o.id));
    return { operations: operations.map((o) => ({ ...o, counts: countTargets(counts.get(o.id) ?? {}) })), total };
  }

  /** Cancels the targets not started yet; those already handed to a slave run to their end. */
  async cancel(id: number, user: string): Promise<number> {
    const report = await this.report(id);
    const commands = new CommandsRepo(this.db);
    let cancelled = 0;
    for (const t of report.targets.filter((x) => x.state === 'held' || x.state === 'queued')) {
      if (await commands.update(t.id, { state: 'cancelled', message: `cancelled by ${user}`, finishedAt: new Date().toISOString() }, ['held', 'queued'])) cancelled++;
    }
    this.log.info('operation cancelled', { operationId: id, cancelled, user });
    this.onChange();
    return cancelled;
  }

  /** A new operation for the targets that failed or timed out (whose servers still exist). */
  async retry(id: number, user: string): Promise<Operation> {
    const report = await this.report(id);
    if (report.operation.packageId === null) throw new ValidationError('The update of this operation was deleted; it cannot be retried');
    const servers = report.targets.filter((t) => (t.state === 'failed' || t.state === 'timedout') && t.serverId !== null).map((t) => t.serverId as number);
    if (servers.length === 0) throw new ValidationError('No target failed or timed out: there is nothing to retry');
    return this.create({ action: report.operation.action, packageId: report.operation.packageId, servers, allowDowngrade: report.operation.allowDowngrade, user, retryOf: id });
  }
}
