import { AgentCallError, postToAgent } from './agent-caller.js';
import { CLOCK_WINDOW_MS, describeOffset, offsetMoved } from './clock-offset.js';
import { newNonce } from '../lib/agent-keys.js';
import { signRequest } from '../lib/request-signing.js';
import { errorMessage } from '../lib/errors.js';
import type { CommandsRepo } from './db/commands-repo.js';
import type { ServersRepo } from './db/servers-repo.js';
import type { Command, SlaveRecord } from './domain.js';
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
      const answer = await postToAgent(new URL(path, server.address), { ...headers, 'content-type': 'application/json' }, body, 10_000);
      await this.noteClock(server, answer.clockOffsetMs);
      const now = new Date().toISOString();
      if (await this.commands.update(command.id, { state: 'delivered', deliveredAt: now, attempts: command.attempts + 1, nextAttemptAt: null }, ['queued', 'delivered'])) {
        this.onChange(command.id);
      }
    } catch (err) {
      const call = err instanceof AgentCallError ? err : null;
      await this.noteClock(server, call?.clockOffsetMs ?? null);
      const refused = call ? whyRefused(call) : null;
      if (call?.refusal === 'clock' && command.deliveredAt === null) {
        // The slave answered, and refuses every call until its clock is set: the target fails now
        // with that reason, not at its deadline as "unreachable". (A command it may already hold,
        // delivered before, is left to run: its result still comes through the agent's reports.)
        if (await this.commands.update(command.id, { state: 'failed', message: `${refused}, then retry`, attempts: command.attempts + 1, finishedAt: new Date().toISOString() }, ['queued'])) {
          this.log.warn('agent refused the master\'s call: clocks apart', { server: server.name, commandId: command.id, clockOffsetMs: call.clockOffsetMs });
          this.onChange(command.id);
        }
        return;
      }
      const attempts = command.attempts + 1;
      const delay = Math.min(60_000, 1000 * 2 ** Math.min(attempts - 1, 6));
      const reason = call?.code ?? (err as { code?: string }).code ?? errorMessage(err);
      const again = `trying again in ${Math.round(delay / 1000)} s`;
      await this.commands.update(command.id, {
        state: 'queued', attempts, nextAttemptAt: new Date(Date.now() + delay).toISOString(),
        message: refused ? `${refused}; ${again}` : `cannot reach the agent at ${server.address} (${reason}); ${again}`,
      }, ['queued', 'delivered']);
      if (refused) this.log.warn('agent refused the master\'s call', { server: server.name, commandId: command.id, attempts, reason: call?.refusal ?? null });
      else this.log.warn('agent unreachable', { server: server.name, commandId: command.id, attempts, error: reason });
      this.onChange(command.id);
    }
  }

  /** Keeps the offset a bidirectional agent's answer showed, when it moved (not a write per call). */
  private async noteClock(server: SlaveRecord, offsetMs: number | null): Promise<void> {
    if (offsetMs === null || !offsetMoved(offsetMs, server.clockOffsetMs)) return;
    await this.servers.setClockOffset(server.id, offsetMs).catch((err: unknown) => this.log.error('could not record a clock offset', { server: server.name, error: errorMessage(err) }));
  }
}

/**
 * The agent's reason for a refusal, in the master's words: the agent gives a word from a fixed
 * list and what its clock reads, never text of its own (nothing it says reaches the report).
 */
export function whyRefused(call: AgentCallError): string | null {
  const window = CLOCK_WINDOW_MS / 1000;
  switch (call.refusal) {
    case 'clock':
      return `${call.clockOffsetMs === null ? `the slave's clock is more than ${window} s off the master's` : describeOffset(call.clockOffsetMs)}: it refuses the master's calls when the clocks differ by more than ${window} s; set its clock (NTP)`;
    case 'signature':
      return 'the slave does not recognise the master\'s signature (it trusts another master key: enroll it again)';
    case 'unsigned':
      return 'the slave received the call without its signature (is something between the master and the slave?)';
    case 'replay':
      return 'the slave refused the call as one it had received before';
    case 'not-accepted':
      return 'the slave does not know yet that it was accepted';
    case 'malformed':
      return 'the slave could not read the command (does it run an older version than the master?)';
    default:
      return null;
  }
}
