import { AWAY_GRACE_MS } from '../server/operations-engine.js';
import { installedVersion, openRecords, stagingSummary } from './agent-disk.js';
import type { Fleet } from './fleet.js';
import type { OperationsLoop } from './operations.js';
import { sleep } from './random.js';

async function waitUntil(what: string, limitMs: number, done: () => Promise<boolean>, say: (line: string) => void): Promise<boolean> {
  const started = Date.now();
  while (Date.now() - started < limitMs) {
    if (await done()) {
      say(`settled: ${what} after ${Math.round((Date.now() - started) / 1000)} s`);
      return true;
    }
    await sleep(2000);
  }
  say(`not settled: ${what} within ${Math.round(limitMs / 1000)} s`);
  return false;
}

/** Agents idle, their results reported, the master listing what their disks run, staging empty. */
async function converged(fleet: Fleet): Promise<boolean> {
  const servers = await fleet.api.servers();
  for (const agent of fleet.agents) {
    if ((await openRecords(agent.dataDir)).length > 0 || (await stagingSummary(agent.dataDir)) !== null) return false;
    if (servers.find((s) => s.id === agent.serverId)?.version !== (await installedVersion(agent.dataDir))) return false;
  }
  return true;
}

/**
 * After the faults: gives every target time to end (at worst at its deadline: a bidirectional one
 * may wait for a transfer slot first, hence twice the deadline; plus the grace a restarted master
 * gives deadlines that passed while it was down), deletes every update (agents
 * should then drop what they staged), and waits for the agents to be idle and the master to list
 * what they run. Each wait is bounded; the checks that follow say what did not settle.
 */
export async function settle(fleet: Fleet, loop: OperationsLoop, say: (line: string) => void): Promise<void> {
  const { bidirectionalS, mailboxS } = fleet.deadlines;
  // A master restarted late in the faults holds the deadlines that passed while it was down.
  const endLimitMs = (Math.max(2 * bidirectionalS, mailboxS) + 60) * 1000 + AWAY_GRACE_MS;
  await waitUntil('every operation ended', endLimitMs, async () => (await fleet.api.operations('running')).length === 0, say);
  await waitUntil('every update deleted', 60_000, async () => (await loop.deleteUpdates(() => true)) === 0, say);
  await waitUntil('agents idle, staging empty, the master listing their versions', 90_000, () => converged(fleet), say);
}
