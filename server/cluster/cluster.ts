import { randomBytes } from 'node:crypto';
import type { Logger } from '../../lib/logger.js';

/**
 * What one master tells the others (all of them, itself included, handle each event):
 * - work: commands were queued for these servers (mailbox polls answer from an in-memory index of
 *   servers that may have work; 'all' reloads it from the database);
 * - forget: a server was removed, admitted again, or changed its mode: drop its cached credentials;
 * - kick: the leader should look at held, queued and finished targets now rather than at its next tick;
 * - resync: this master may have missed events (its connection to the others broke): reload what it caches.
 */
export type ClusterEvent =
  | { type: 'work'; servers: number[] | 'all' }
  | { type: 'forget'; server: number }
  | { type: 'kick' }
  | { type: 'resync' };

/**
 * The masters of one database. Exactly one of them, the leader, runs the background work (the
 * operations engine, the dispatcher to bidirectional agents, housekeeping); every master answers
 * the console, the API and agents.
 */
export interface Cluster {
  /** This master, as logs and the other masters name it. */
  readonly id: string;
  isLeader(): boolean;
  /** The ids of the masters alive now; null for a master alone. */
  alive(): Promise<Set<string> | null>;
  /** Called with true when this master becomes the leader, false when it stops being it (awaited). */
  onLeadership(handler: (leader: boolean) => Promise<void>): void;
  on(handler: (event: ClusterEvent) => void): void;
  /** Handled here at once, and by the other masters as soon as they hear it. */
  publish(event: Exclude<ClusterEvent, { type: 'resync' }>): void;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function newMasterId(): string {
  return randomBytes(6).toString('hex');
}

/** Events to this master's handlers; a throwing handler is logged, never breaks the others. */
export class LocalEvents {
  private readonly handlers: ((event: ClusterEvent) => void)[] = [];
  private readonly leadershipHandlers: ((leader: boolean) => Promise<void>)[] = [];

  constructor(private readonly log: Logger) {}

  on(handler: (event: ClusterEvent) => void): void {
    this.handlers.push(handler);
  }

  onLeadership(handler: (leader: boolean) => Promise<void>): void {
    this.leadershipHandlers.push(handler);
  }

  deliver(event: ClusterEvent): void {
    for (const handler of this.handlers) {
      try {
        handler(event);
      } catch (err) {
        this.log.error('a cluster event handler failed', { event: event.type, error: (err as Error).message });
      }
    }
  }

  async leadership(leader: boolean): Promise<void> {
    for (const handler of this.leadershipHandlers) {
      await handler(leader).catch((err: unknown) => this.log.error('starting or stopping the background work failed', { leader, error: (err as Error).message }));
    }
  }
}

/** One master on its own (SQLite: one master per data folder): always the leader. */
export class SingleMaster implements Cluster {
  readonly id = newMasterId();
  private readonly events: LocalEvents;
  private leader = false;

  constructor(log: Logger) {
    this.events = new LocalEvents(log);
  }

  isLeader(): boolean {
    return this.leader;
  }

  async alive(): Promise<Set<string> | null> {
    return null;
  }

  onLeadership(handler: (leader: boolean) => Promise<void>): void {
    this.events.onLeadership(handler);
  }

  on(handler: (event: ClusterEvent) => void): void {
    this.events.on(handler);
  }

  publish(event: Exclude<ClusterEvent, { type: 'resync' }>): void {
    this.events.deliver(event);
  }

  async start(): Promise<void> {
    this.leader = true;
    await this.events.leadership(true);
  }

  async stop(): Promise<void> {
    if (!this.leader) return;
    this.leader = false;
    await this.events.leadership(false);
  }
}
