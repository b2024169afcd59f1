import type { AgentStatus } from '../lib/agent-protocol.js';
import { SimulatedAgent as KeyedAgent } from '../test/helpers/simulated-agent.js';
import { pool } from './support.js';

/** An agent enrolled through the real API (its own key, a real session), whose calls the benchmark makes itself. */
export interface SimulatedAgent {
  id: number;
  name: string;
  keyed: KeyedAgent;
  status: AgentStatus;
}

/**
 * The headers of one report, as agents send them: the session token, a fresh nonce, the agent's
 * key, and the MAC of the call over this body (the master MACs its answer over the same nonce).
 */
export function agentHeaders(agent: SimulatedAgent, body: string): Record<string, string> {
  return { ...agent.keyed.sessionHeaders('POST', '/api/agent/report', body), 'content-type': 'application/json' };
}

/** Enrolls `count` agents on a master started with --auto-accept, each with its own key and session. */
export async function enrollAgents(url: string, token: string, count: number, concurrency = 32): Promise<SimulatedAgent[]> {
  const agents: SimulatedAgent[] = new Array(count);
  await pool(Array.from({ length: count }, (_, i) => i), concurrency, async (i) => {
    const status: AgentStatus = { name: `sim-${String(i).padStart(5, '0')}`, mode: 'mailbox', address: null, product: 'watchdoc', version: '0.9', staged: [], freeDiskBytes: 10_000_000_000 };
    const keyed = await new KeyedAgent(url, status.name, status).join(token);
    agents[i] = { id: keyed.serverId as number, name: status.name, keyed, status };
  });
  return agents;
}
