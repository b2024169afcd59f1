import pg from 'pg';
import { errorMessage } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import type { Database } from '../db/database.js';
import { MastersRepo } from '../db/masters-repo.js';
import { queryable } from '../db/postgres-database.js';
import { LocalEvents, newMasterId, type Cluster, type ClusterEvent } from './cluster.js';

const CHANNEL = 'propagator_events';
/** The leader's advisory lock ("lead" in ASCII); the migrations use another. */
const LEADER_LOCK = 0x6c656164;
/** NOTIFY payloads are limited to 8000 bytes: longer lists of servers become "reload everything". */
const MAX_PAYLOAD = 7000;

export interface PostgresClusterOptions {
  /** This master's name (--name), in the masters table. */
  name: string;
  /** How often a follower tries to become the leader, and the leader proves it still holds the lock. */
  beatMs: number;
  /** A leader whose connection does not answer within this steps down. */
  beatTimeoutMs: number;
}

/**
 * The masters sharing one PostgreSQL database. Each keeps one connection of its own (outside the
 * pool) that LISTENs for the others' events and, on the leader, holds the leader's advisory lock.
 * The lock belongs to that connection: a leader killed at any moment loses it when the server
 * sees the connection close (at once for a killed process, within the keepalive probes below for
 * a vanished host), and a follower takes it at its next beat. A leader that cannot reach the
 * database steps down at once, before another may take over, so two never work at the same time
 * for longer than a beat (and what they do is safe twice: every state change is conditional).
 */
export class PostgresCluster implements Cluster {
  readonly id = newMasterId();
  private readonly events: LocalEvents;
  private client: pg.Client | null = null;
  private leader = false;
  private timer: NodeJS.Timeout | null = null;
  private beating: Promise<void> | null = null;
  private connectedOnce = false;
  private stopped = false;

  private readonly masters: MastersRepo;

  constructor(private readonly url: string, private readonly db: Database, private readonly log: Logger, private readonly options: PostgresClusterOptions) {
    this.events = new LocalEvents(log);
    this.masters = new MastersRepo(db);
  }

  /** The masters heard from within the last 10 s (each writes its row every beat). */
  alive(): Promise<Set<string> | null> {
    return this.masters.alive(Date.now() - 10_000);
  }

  isLeader(): boolean {
    return this.leader;
  }

  onLeadership(handler: (leader: boolean) => Promise<void>): void {
    this.events.onLeadership(handler);
  }

  on(handler: (event: ClusterEvent) => void): void {
    this.events.on(handler);
  }

  publish(event: Exclude<ClusterEvent, { type: 'resync' }>): void {
    this.events.deliver(event);
    let payload = JSON.stringify({ from: this.id, event });
    if (payload.length > MAX_PAYLOAD && event.type === 'work') payload = JSON.stringify({ from: this.id, event: { type: 'work', servers: 'all' } });
    // Outside any transaction: heard by the others at once (the caller's transaction has committed).
    this.db.run('SELECT pg_notify(?, ?)', [CHANNEL, payload]).catch((err: unknown) => {
      this.log.warn('could not tell the other masters', { event: event.type, error: errorMessage(err) });
    });
  }

  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => void this.beat(), this.options.beatMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.beating;
    await this.disconnect();
    await this.setLeader(false);
    // Gone on purpose: the others need not wait for its silence.
    await this.masters.leave(this.id).catch(() => undefined);
  }

  /**
   * One step, bounded as a whole: a database that stops answering (a partition: no error, no
   * close, packets just stop) makes the leader step down after beatTimeoutMs, not never.
   */
  private beat(): Promise<void> {
    if (this.beating || this.stopped) return this.beating ?? Promise.resolve();
    this.beating = withTimeout(this.beatOnce(), this.options.beatTimeoutMs, 'the database did not answer in time')
      .catch((err: unknown) => this.lost(err))
      .finally(() => (this.beating = null));
    return this.beating;
  }

  /** (Re)connects, writes this master's row (its proof of life, and the leader's that its connection works), then takes the lock if free. */
  private async beatOnce(): Promise<void> {
    const client = this.client ?? (await this.connect());
    await new MastersRepo(queryable(client)).beat(this.id, this.options.name, Date.now());
    if (this.leader) return;
    const row = (await client.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1) AS got', [LEADER_LOCK])).rows[0];
    // A beat cut short by the timeout may still take the lock afterwards: only a live client's answer counts.
    if (row?.got && this.client === client && !this.stopped) await this.setLeader(true);
  }

  private async connect(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: this.url, keepAlive: true, connectionTimeoutMillis: this.options.beatTimeoutMs });
    client.on('error', (err) => void this.lost(err));
    client.on('end', () => void this.lost(new Error('the connection to the database ended')));
    client.on('notification', (message) => this.heard(message.payload));
    try {
      await client.connect();
      // Let the server notice a vanished master in ~11 s, and free its lock for another.
      await client.query('SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3');
      // And a silent one, whatever the network says (a partition behind a proxy, a paused process):
      // this connection speaks every beat, so a session quiet for 10 s belongs to a master that is
      // not working. PostgreSQL 14 and later; older servers keep the keepalives alone.
      await client.query(`SET idle_session_timeout = ${Math.max(10_000, 10 * this.options.beatMs)}`).catch(() => undefined);
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (err) {
      client.removeAllListeners();
      client.on('error', () => undefined);
      await client.end().catch(() => undefined);
      throw err;
    }
    this.client = client;
    if (this.connectedOnce) {
      this.log.info('connected to the other masters again');
      // Events sent while the connection was down were lost: reload what they would have changed.
      this.events.deliver({ type: 'resync' });
    }
    this.connectedOnce = true;
    return client;
  }

  private heard(payload: string | undefined): void {
    try {
      const { from, event } = JSON.parse(payload ?? '') as { from: string; event: ClusterEvent };
      if (from !== this.id && event && typeof event.type === 'string' && event.type !== 'resync') this.events.deliver(event);
    } catch {
      this.log.warn('an unreadable event from another master', { payload: (payload ?? '').slice(0, 200) });
    }
  }

  private async lost(err: unknown): Promise<void> {
    if (!this.client) return;
    const client = this.client;
    this.client = null;
    client.removeAllListeners('end');
    client.removeAllListeners('notification');
    // Keep an error listener: a late socket error must not end the process.
    client.removeAllListeners('error');
    client.on('error', () => undefined);
    if (!this.stopped) this.log.warn('lost the connection to the other masters: trying again', { error: errorMessage(err), leader: this.leader });
    await this.setLeader(false);
    await client.end().catch(() => undefined);
  }

  private async disconnect(): Promise<void> {
    const client = this.client;
    this.client = null;
    if (!client) return;
    client.removeAllListeners();
    client.on('error', () => undefined);
    // Ending the connection releases the leader's lock at once.
    await client.end().catch(() => undefined);
  }

  private async setLeader(leader: boolean): Promise<void> {
    if (this.leader === leader) return;
    this.leader = leader;
    this.log.info(leader ? 'this master now runs the background work (leader)' : 'this master no longer runs the background work', { master: this.id });
    await this.events.leadership(leader);
  }
}

function withTimeout<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    work,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
