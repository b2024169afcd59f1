import type { AgentStatus } from '../lib/agent-protocol.js';
import { errorMessage } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { AgentConfig } from './config.js';
import type { CommandRunner } from './command-runner.js';
import { NotAcceptedError, RefusedError, RetryLaterError, type MasterClient } from './master-client.js';

/** ±20 %, so a thousand agents started together do not keep calling together. */
export function withJitter(ms: number, random = Math.random): number {
  return Math.round(ms * (0.8 + 0.4 * random()));
}

/**
 * The agent's calls to the master. Mailbox mode: a poll that brings back work, at an interval
 * growing from --poll-min to --poll-max while idle, back to the minimum when work arrives, or as
 * soon as the master asks. Bidirectional mode: a heartbeat every --heartbeat seconds, and at once
 * when a result is ready. Both back off exponentially while the master cannot be reached.
 */
export class ReportLoop {
  private stopped = false;
  private wakeUp: (() => void) | null = null;
  private wokenEarly = false;
  private running: Promise<void> | null = null;
  private idleDelay: number;
  private failures = 0;
  /** The delay chosen after each call; tests and logs read it. */
  lastDelayMs = 0;

  constructor(
    private readonly config: Pick<AgentConfig, 'mode' | 'pollMinMs' | 'pollMaxMs' | 'backoffMaxMs' | 'heartbeatMs'>,
    private readonly deps: { client: MasterClient; runner: CommandRunner; status: () => Promise<AgentStatus>; log: Logger },
  ) {
    this.idleDelay = config.pollMinMs;
  }

  start(): void {
    this.running = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake();
    await this.running;
  }

  /** Cuts the current wait short; a wake during a call is remembered for the next wait. */
  wake(): void {
    if (this.wakeUp) this.wakeUp();
    else this.wokenEarly = true;
  }

  private sleep(ms: number): Promise<void> {
    if (this.wokenEarly) {
      this.wokenEarly = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakeUp = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeUp = done;
    });
  }

  /** One call to the master; returns how long to wait before the next. */
  async once(): Promise<number> {
    const { client, runner, log } = this.deps;
    const { mode, pollMinMs, pollMaxMs, backoffMaxMs, heartbeatMs } = this.config;
    try {
      const results = await runner.outbox();
      const answer = await client.report(await this.deps.status(), results);
      await runner.acknowledge(answer.acknowledged, results);
      if (this.failures > 0) log.info('master reachable again', { after: this.failures });
      this.failures = 0;
      for (const command of answer.commands) await runner.submit(command);
      if (answer.drop?.length) await runner.dropStaged(answer.drop, 'the master deleted it');
      // More results than one report carries: the rest go at once, not a heartbeat later.
      if (mode === 'bidirectional') return (await runner.outbox()).length > 0 ? Math.min(1000, heartbeatMs) : heartbeatMs;
      // Work came, or results went or wait to go: call again soon. A command still running is not a
      // reason: its result wakes this loop, and calling at the minimum meanwhile only costs CPU.
      const news = answer.commands.length > 0 || results.length > 0 || (await runner.outbox()).length > 0;
      if (news) this.idleDelay = pollMinMs;
      if (answer.callAgainInSeconds !== null) return Math.max(200, answer.callAgainInSeconds * 1000);
      const delay = this.idleDelay;
      this.idleDelay = Math.min(pollMaxMs, Math.round(this.idleDelay * 1.5));
      return delay;
    } catch (err) {
      if (err instanceof RetryLaterError) {
        log.warn('the master asked to call again later', { retryAfterMs: err.retryAfterMs });
        return err.retryAfterMs;
      }
      if (err instanceof RefusedError) {
        log.error('the master refused this agent', { reason: err.message });
        return backoffMaxMs;
      }
      if (err instanceof NotAcceptedError) {
        log.error(err.state === 'rejected' ? 'the administrator rejected this server' : 'this server waits for the administrator to accept it again', { reason: err.message });
        return Math.min(backoffMaxMs, Math.max(pollMaxMs, 30_000));
      }
      this.failures++;
      const delay = Math.min(backoffMaxMs, Math.max(pollMinMs, 1000) * 2 ** Math.min(this.failures - 1, 10));
      log.warn('cannot reach the master; backing off', { failures: this.failures, delayMs: delay, error: errorMessage(err) });
      return delay;
    }
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      this.lastDelayMs = await this.once();
      if (this.stopped) break;
      await this.sleep(withJitter(this.lastDelayMs));
    }
  }
}
