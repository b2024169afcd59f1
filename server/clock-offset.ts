import { MAX_SKEW_MS } from '../lib/request-signing.js';
import type { ServerMode } from './domain.js';

/**
 * How far a slave's clock is from the master's. Agents say what their clock reads (mailbox and
 * heartbeat calls carry `agentTime` under the call's MAC; a bidirectional agent's answers carry
 * it in a header); the master measures the offset against its own clock and keeps it per server.
 * Only numbers are taken from the agent, bounded, and every sentence here is the master's own.
 */

/** A new measurement is written only when it moved this much: not a write per poll. */
export const CLOCK_OFFSET_STEP_MS = 1000;

/** Past this, a bidirectional agent refuses the master's signed calls as stale (request-signing.ts). */
export const CLOCK_WINDOW_MS = MAX_SKEW_MS;

/** The range of a JavaScript date: a claimed time outside it is no time at all. */
const MAX_TIME_MS = 8.64e15;

/** A time an agent claims, as a whole number of ms, or null when it is not one. */
export function agentTimeOf(value: unknown): number | null {
  if (typeof value === 'string') {
    if (!/^-?\d{1,16}$/.test(value)) return null;
    value = Number(value);
  }
  if (typeof value !== 'number' || !Number.isFinite(value) || Math.abs(value) > MAX_TIME_MS) return null;
  return Math.round(value);
}

/**
 * The slave's clock minus the master's, from a time the agent read between `sentAt` and
 * `receivedAt` on the master's clock (the midpoint halves the error the round trip makes).
 */
export function offsetFrom(agentTime: unknown, sentAt: number, receivedAt = sentAt): number | null {
  const time = agentTimeOf(agentTime);
  return time === null ? null : time - Math.round((sentAt + receivedAt) / 2);
}

/** Whether a new measurement is worth a database write, against the one written last. */
export function offsetMoved(measured: number, written: number | null | undefined): boolean {
  return written === null || written === undefined || Math.abs(measured - written) > CLOCK_OFFSET_STEP_MS;
}

/** "the slave's clock is 600 s ahead of the master's" (or behind; whole seconds). */
export function describeOffset(offsetMs: number): string {
  const seconds = Math.round(Math.abs(offsetMs) / 1000);
  if (seconds === 0) return 'the slave\'s clock agrees with the master\'s';
  return `the slave's clock is ${seconds} s ${offsetMs > 0 ? 'ahead of' : 'behind'} the master's`;
}

/** What Print servers says about a server's clock, when it is off by more than the window. */
export function clockWarning(offsetMs: number | null, mode: ServerMode): string | null {
  if (offsetMs === null || Math.abs(offsetMs) <= CLOCK_WINDOW_MS) return null;
  const window = CLOCK_WINDOW_MS / 1000;
  const why = mode === 'bidirectional'
    ? `it refuses the master's calls when the clocks differ by more than ${window} s`
    : `its mailbox calls do not depend on it, but it checks the dates of certificates and packages with its own clock, and in bidirectional mode it would refuse the master's calls (more than ${window} s apart)`;
  return `${describeOffset(offsetMs)}: ${why}; set its clock (NTP)`;
}

/**
 * Which offsets measured from agents' calls are worth writing. A call's offset is the agent's
 * time minus the master's when the call arrived: low by the call's transit, never high. So a rise
 * of more than a second is news at once (a clock set forward, or a first measurement taken from a
 * slow call); a fall is taken only when every call for `holdMs` shows it, as the highest of the
 * calls in the second half of that time (late calls from before a clock was set back do not
 * count). A master slowed down under load (calls arriving seconds late) therefore writes nothing.
 */
export class OffsetFilter {
  /** Servers whose calls all show a lower offset than the one written: since when, and the highest lately. */
  private readonly lows = new Map<number, { since: number; recent: number | null }>();

  constructor(private readonly holdMs = 60_000) {}

  /** The offset to write now, or null. */
  next(serverId: number, measured: number, written: number | null | undefined, now: number): number | null {
    if (written === null || written === undefined || measured > written + CLOCK_OFFSET_STEP_MS) {
      this.lows.delete(serverId);
      return measured;
    }
    if (measured >= written - CLOCK_OFFSET_STEP_MS) {
      this.lows.delete(serverId);
      return null;
    }
    const low = this.lows.get(serverId);
    if (!low) {
      this.lows.set(serverId, { since: now, recent: null });
      return null;
    }
    if (now - low.since >= this.holdMs / 2) low.recent = Math.max(low.recent ?? -Infinity, measured);
    if (now - low.since < this.holdMs || low.recent === null) return null;
    this.lows.delete(serverId);
    return low.recent;
  }

  forget(serverId: number): void {
    this.lows.delete(serverId);
  }
}
