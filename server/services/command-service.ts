import { randomUUID } from 'node:crypto';
import { NotFoundError, ValidationError } from '../../lib/errors.js';
import type { CommandsRepo } from '../db/commands-repo.js';
import type { PackagesRepo } from '../db/packages-repo.js';
import type { ServersRepo } from '../db/servers-repo.js';
import { newCommand, type Command, type CommandType } from '../domain.js';
import type { Logger } from '../../lib/logger.js';

/** Queues work for one slave. The operations engine builds on this; tests drive it directly. */
export class CommandService {
  /** Called after a command is queued for a server (the dispatcher pushes it, mailbox polls find it). */
  onQueued: (serverIds: number[]) => void = () => undefined;

  constructor(
    private readonly commands: CommandsRepo,
    private readonly servers: ServersRepo,
    private readonly packages: PackagesRepo,
    private readonly log: Logger,
    /** Every command has a deadline, as an operation's targets do: the agent stops retrying there, the engine times it out. */
    private readonly deadlines: { bidirectionalMs: number; mailboxMs: number },
  ) {}

  async enqueue(input: { serverId: number; type: CommandType; packageId: number; allowDowngrade?: boolean; id?: string }): Promise<Command> {
    const server = await this.servers.findById(input.serverId);
    if (!server) throw new NotFoundError(`There is no slave server with id ${input.serverId}`);
    const pkg = await this.packages.findById(input.packageId);
    if (!pkg || pkg.state !== 'valid') throw new ValidationError(`There is no valid update with id ${input.packageId}`);
    const now = Date.now();
    const command = newCommand({
      id: input.id ?? randomUUID(), operationId: null, server, pkg, type: input.type, allowDowngrade: input.allowDowngrade ?? false,
      state: 'queued', message: server.mode === 'mailbox' ? 'waiting for the slave to call in' : '',
      deadlineAt: new Date(now + (server.mode === 'mailbox' ? this.deadlines.mailboxMs : this.deadlines.bidirectionalMs)).toISOString(), at: new Date(now).toISOString(),
    });
    await this.commands.insert(command);
    this.log.info('command queued', { commandId: command.id, server: server.name, type: command.type, package: pkg.name, version: pkg.version });
    this.onQueued([server.id]);
    return command;
  }

  async get(id: string): Promise<Command> {
    const found = await this.commands.findById(id);
    if (!found) throw new NotFoundError(`There is no command ${id}`);
    return found;
  }

  listForServer(serverId: number): Promise<Command[]> {
    return this.commands.listForServer(serverId);
  }
}
