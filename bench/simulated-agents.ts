import { newNonce, NONCE_HEADER } from '../lib/agent-keys.js';
import type { AgentStatus } from '../lib/agent-protocol.js';
import { AGENT_KEY_HEADER, SimulatedAgent as KeyedAgent } from '../test/helpers/simulated-agent.js';
import { pool } from './support.js';

/** An agent enrolled through the real API (its own key, a real session), whose calls the benchmark makes itself. */
export interface SimulatedAgent {
  id: number;
  name: string;
  authorization: string;
  fingerprint: string;
  status: AgentStatus;
}

/** The headers of one agent call: its session, a fresh nonce, its key (the answer is signed for them). */
export function agentHeaders(agent: SimulatedAgent): Record<string, string> {
  return { authorization: agent.authorization, [NONCE_HEADER]: newNonce(), [AGENT_KEY_HEADER]: agent.fingerprint, 'content-type': 'application/json' };
}

/** Enrolls `count` agents on a master started with --auto-accept, each with its own key and session. */
export async function enrollAgents(url: string, token: string, count: number, concurrency = 32): Promise<SimulatedAgent[]> {
  const agents: SimulatedAgent[] = new Array(count);
  await pool(Array.from({ length: count }, (_, i) => i), concurrency, async (i) => {
    const status: AgentStatus = { name: `sim-${String(i).padStart(5, '0')}`, mode: 'mailbox', address: null, product: 'watchdoc', version: '0.9', staged: [], freeDiskBytes: 10_000_000_000 };
    const agent = await new KeyedAgent(url, status.name, status).join(token);
    agents[i] = { id: agent.serverId as number, name: status.name, authorization: agent.authorization, fingerprint: agent.fingerprint, status };
  });
  return agents;
}
