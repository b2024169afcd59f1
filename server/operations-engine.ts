import { errorMessage } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { CommandsRepo } from './db/commands-repo.js';
import type { OperationsRepo } from './db/operations-repo.js';
import type { ServersRepo } from './db/servers-repo.js';
import { OPEN_COMMAND_STATES, type Command, type OperationState } from './domain.js';

export interface EngineOptions {
  /** Bidirectional targets transferring at once, all operations together. */
  parallelTransfers: number;
  bidirectionalDeadlineMs: number;
  tickMs: number;
  /**
   * After the master was away (down, or stalled as by SIGSTOP), at most how long no target times
   * out, so that agents can deliver the results they kept meanwhile.
   */
  awayGraceMs: number;
}

/**
 * An agent backs off to at most 5 minutes (±20 %) while it cannot reach the master (agent/config.ts,
 * backoffMaxMs), so it calls within 6 minutes of the master's return. Its backoff is not bounded by
 * the outage's length: every result that becomes ready meanwhile adds a failed call and doubles it
 * (the soak saw a 128 s backoff after a 76 s outage).
 */
export const AWAY_GRACE_MS = 6 * 60_000;

/** No tick for this long: the master was stopped, paused or starved, not merely busy. */
const AWAY_AFTER_MS = 10_000;

/** The operation's outcome once no target is open. */
export function outcome(states: Command['state'][]): OperationState | null {
  if (states.some((s) => OPEN_COMMAND_STATES.includes(s))) return null;
  if (states.every((s) => s === 'succeeded')) return 'succeeded';
  if (states.some((s) => s === 'failed' || s === 'timedout')) return 'failed';
  return 'cancelled';
}

/**
 * Moves operations along: starts held bidirectional targets as transfer slots free up, times out
 * targets past their deadline, and settles each operation when its last target ends. Everything it
 * knows is in SQLite, so after a master restart it carries on where it was.
 */
export class OperationsEngine {
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private again = false;
  private lastTick: number | null = null;
  /** No target times out before this (ms): the master was away, agents may still hold results. */
  private holdUntil = 0;

  constructor(
    private readonly commands: CommandsRepo,
    private readonly operations: OperationsRepo,
    private readonly servers: ServersRepo,
    private readonly log: Logger,
    private readonly options: EngineOptions,
    /** Called when targets were released, so the dispatcher pushes them. */
    private readonly onReleased: () => void,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.kick(), this.options.tickMs);
    this.timer.unref();
    this.kick();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    while (this.ticking) await new Promise((r) => setTimeout(r, 20));
  }

  kick(): void {
    // Until start(), nothing moves by itself (an app built without main.ts, as in tests).
    if (!this.timer) return;
    if (this.ticking) {
      this.again = true;
      return;
    }
    this.ticking = true;
    this.tick()
      .catch((err: unknown) => this.log.error('operations engine tick failed', { error: errorMessage(err) }))
      .finally(() => {
        this.ticking = false;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  async tick(now = new Date()): Promise<void> {
    await this.noteAway(now.getTime());
    await this.timeOut(now);
    await this.release(now);
    for (const op of await this.operations.running()) await this.settle(op.id, now);
  }

  /**
   * An agent that finished its target while the master was down keeps the result and sends it when
   * the master answers again, after its backoff: timing the target out meanwhile would report "no
   * result" for work that was done (a silent success). So after an absence (a start: since an
   * agent was last heard; a stall: since the last tick), no target times out for a while.
   */
  private async noteAway(now: number): Promise<void> {
    let awayMs = 0;
    if (this.lastTick === null) {
      const heard = (await this.servers.list()).reduce((last, s) => Math.max(last, Date.parse(s.lastSeen ?? '') || 0), 0);
      awayMs = heard > 0 ? now - heard : 0;
    } else if (now - this.lastTick > Math.max(AWAY_AFTER_MS, 10 * this.options.tickMs)) {
      awayMs = now - this.lastTick;
    }
    this.lastTick = now;
    if (awayMs <= 0 || this.options.awayGraceMs <= 0) return;
    this.holdUntil = Math.max(this.holdUntil, now + this.options.awayGraceMs);
    this.log.info('the master was away: no target times out for a while', { awaySeconds: Math.round(awayMs / 1000), graceSeconds: Math.round(this.options.awayGraceMs / 1000) });
  }

  private async timeOut(now: Date): Promise<void> {
    const held = now.getTime() < this.holdUntil;
    for (const c of await this.commands.overdue(now.toISOString())) {
      // Held after an absence, but never past its deadline plus the grace: a master that stalls
      // again and again still ends every target.
      if (held && now.getTime() < Date.parse(c.deadlineAt ?? '') + this.options.awayGraceMs) continue;
      let message = `no result from the slave before the deadline (${c.deadlineAt})`;
      if (c.state === 'queued' || c.state === 'held') {
        const server = c.serverId === null ? null : await this.servers.findById(c.serverId);
        message = server?.mode === 'mailbox'
          ? `the slave did not call in before the deadline (last call: ${server.lastSeen ?? 'never'})`
          : /^the slave's clock is /.test(c.message)
            // It answered every time: its clock, not the network, kept the command from it.
            ? `the slave refused the master's calls until the deadline: ${c.message.replace(/; trying again in \d+ s$/, '')}`
            : `the slave could not be reached before the deadline${c.message ? ` (${c.message})` : ''}`;
      }
      if (await this.commands.update(c.id, { state: 'timedout', message, finishedAt: now.toISOString() }, OPEN_COMMAND_STATES)) {
        this.log.warn('target timed out', { commandId: c.id, operationId: c.operationId, server: c.serverName });
      }
    }
  }

  private async release(now: Date): Promise<void> {
    const room = this.options.parallelTransfers - (await this.commands.activeBidirectional());
    if (room <= 0) return;
    const held = await this.commands.held(room);
    for (const c of held) {
      // The deadline of a bidirectional target runs from its start, not from its wait for a slot.
      await this.commands.update(c.id, { state: 'queued', message: '', deadlineAt: new Date(now.getTime() + this.options.bidirectionalDeadlineMs).toISOString() }, ['held']);
    }
    if (held.length > 0) this.onReleased();
  }

  async settle(operationId: number, now = new Date()): Promise<void> {
    const targets = await this.commands.forOperation(operationId);
    const state = outcome(targets.map((t) => t.state));
    if (state && (await this.operations.finish(operationId, state, now.toISOString()))) {
      this.log.info('operation finished', { operationId, state, targets: targets.length });
    }
  }
}
