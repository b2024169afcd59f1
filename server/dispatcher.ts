import { postToAgent } from './agent-caller.js';
import { newNonce } from '../lib/agent-keys.js';
import { signRequest } from '../lib/request-signing.js';
import { errorMessage } from '../lib/errors.js';
import type { CommandsRepo } from './db/commands-repo.js';
import type { ServersRepo } from './db/servers-repo.js';
import type { Command } from './domain.js';
import type { Logger } from '../lib/logger.js';
import type { MasterKey } from './master-key.js';
import { toAgentCommand } from './services/agent-service.js';

export interface DispatcherOptions {
  /** Deliveries in flight at once. */
  concurrency: number;
  /** A delivered command with no news from the agent after this long is delivered again. */
  redeliverAfterMs: number;
  tickMs: number;
}

/**
 * Bidirectional mode: the master calls each agent to hand it its commands as soon as they are
 * queued, signing every call. An agent that cannot be reached is retried with exponential backoff
 * (1 s, 2 s, 4 s … at most 60 s); commands are idempotent, so delivering one twice is harmless.
 */
export class Dispatcher {
  private timer: NodeJS.Timeout | null = null;
  private readonly inFlight = new Set<string>();
  private ticking = false;
  /** Until start(), kick() does nothing: an app built without main.ts (tests) never calls agents. */
  private stopped = true;

  constructor(
    private readonly commands: CommandsRepo,
    private readonly servers: ServersRepo,
    private readonly key: () => Promise<MasterKey>,
    private readonly log: Logger,
    private readonly options: DispatcherOptions = { concurrency: 8, redeliverAfterMs: 60_000, tickMs: 1000 },
    private readonly onChange: (commandId: string) => void = () => undefined,
  ) {}

  start(): void {
    this.stopped = false;
    this.timer = setInterval(() => this.kick(), this.options.tickMs);
    this.timer.unref();
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    while (this.inFlight.size > 0 || this.ticking) await new Promise((r) => setTimeout(r, 20));
  }

  /** Looks for due work now (called when a command is queued). */
  kick(): void {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    this.tick()
      .catch((err: unknown) => this.log.error('dispatcher tick failed', { error: errorMessage(err) }))
      .finally(() => {
        this.ticking = false;
      });
  }

  private async tick(): Promise<void> {
    const room = this.options.concurrency - this.inFlight.size;
    if (room <= 0) return;
    const now = Date.now();
    const due = await this.commands.dueForPush(new Date(now).toISOString(), new Date(now - this.options.redeliverAfterMs).toISOString(), room + this.inFlight.size);
    for (const command of due.filter((c) => !this.inFlight.has(c.id)).slice(0, room)) {
      this.inFlight.add(command.id);
      this.deliver(command).finally(() => this.inFlight.delete(command.id));
    }
  }

  private async deliver(command: Command): Promise<void> {
    const server = command.serverId === null ? null : await this.servers.findById(command.serverId);
    if (!server?.address) return;
    const body = JSON.stringify(toAgentCommand(command));
    const path = '/api/commands';
    const headers = signRequest((await this.key()).privateKey, { method: 'POST', path, body, agentId: server.id, nonce: newNonce() });
    try {
      await postToAgent(new URL(path, server.address), { ...headers, 'content-type': 'application/json' }, body, 10_000);
      const now = new Date().toISOString();
      if (await this.commands.update(command.id, { state: 'delivered', deliveredAt: now, attempts: command.attempts + 1, nextAttemptAt: null }, ['queued', 'delivered'])) {
        this.onChange(command.id);
      }
    } catch (err) {
      const attempts = command.attempts + 1;
      const delay = Math.min(60_000, 1000 * 2 ** Math.min(attempts - 1, 6));
      const reason = (err as { code?: string }).code ?? errorMessage(err);
      await this.commands.update(command.id, {
        state: 'queued', attempts, nextAttemptAt: new Date(Date.now() + delay).toISOString(),
        message: `cannot reach the agent at ${server.address} (${reason}); trying again in ${Math.round(delay / 1000)} s`,
      }, ['queued', 'delivered']);
      this.log.warn('agent unreachable', { server: server.name, commandId: command.id, attempts, error: reason });
      this.onChange(command.id);
    }
  }
}
