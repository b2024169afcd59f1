import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { CommandsRepo } from '../server/db/commands-repo.js';
import { SqliteDatabase } from '../server/db/sqlite-database.js';
import type { Command } from '../server/domain.js';
import type { Check } from './checks.js';
import type { SoakAgent } from './fleet.js';

interface AgentRecord {
  result: { state: string; message: string };
}

async function agentRecord(agent: SoakAgent, commandId: string): Promise<AgentRecord | null> {
  try {
    return JSON.parse(await readFile(path.join(agent.dataDir, 'commands', `${commandId}.json`), 'utf8')) as AgentRecord;
  } catch {
    return null;
  }
}

/** Why the master's word and the agent's disagree about one target, or null when they agree. */
function disagreement(target: Command, record: AgentRecord | null): string | null {
  const agentDidIt = record?.result.state === 'succeeded' || record?.result.state === 'staged';
  if (record?.result.state === 'running') return `the agent still runs it (${record.result.message})`;
  if (target.state === 'succeeded' && !agentDidIt) return `the master says succeeded, the agent ${record ? `says ${record.result.state}` : 'has no record of it'}`;
  if (target.state !== 'succeeded' && agentDidIt) return `the master says ${target.state} ("${target.message.slice(0, 120)}"), the agent ${record.result.state}: "${record.result.message.slice(0, 80)}"`;
  return null;
}

/**
 * Every target against what its agent did, from the master's database (read once the master has
 * stopped) and the agents' command records (DATA/commands/<id>.json): a target the master reports
 * failed or timed out while the agent did it is a silent success, the reverse a false one.
 */
export async function outcomesAgree(masterDataDir: string, agents: SoakAgent[]): Promise<Check> {
  const db = await SqliteDatabase.open(path.join(masterDataDir, 'propagator.sqlite'));
  const details: string[] = [];
  let targets = 0;
  try {
    const repo = new CommandsRepo(db);
    for (const agent of agents) {
      for (const target of (await repo.listForServer(agent.serverId)).filter((c) => c.operationId !== null)) {
        targets++;
        const why = disagreement(target, await agentRecord(agent, target.id));
        if (why) details.push(`${agent.name}, operation #${target.operationId} ${target.type} ${target.version}: ${why}`);
      }
    }
  } finally {
    await db.close();
  }
  return { name: "every target's outcome is what its agent did", pass: targets > 0 && details.length === 0, details: [`${targets} targets compared, ${details.length} disagree`, ...details] };
}
