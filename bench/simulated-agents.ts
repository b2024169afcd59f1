import type { AgentStatus } from '../lib/agent-protocol.js';
import { pool } from './support.js';

/** An agent enrolled through the real API, whose calls the benchmark makes itself. */
export interface SimulatedAgent {
  id: number;
  name: string;
  authorization: string;
  status: AgentStatus;
}

export async function enrollAgents(url: string, token: string, count: number, concurrency = 32): Promise<SimulatedAgent[]> {
  const agents: SimulatedAgent[] = new Array(count);
  await pool(Array.from({ length: count }, (_, i) => i), concurrency, async (i) => {
    const status: AgentStatus = { name: `sim-${String(i).padStart(5, '0')}`, mode: 'mailbox', address: null, product: 'watchdoc', version: '0.9', staged: [], freeDiskBytes: 10_000_000_000 };
    const res = await fetch(`${url}/api/agent/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...status, token }) });
    if (res.status !== 201) throw new Error(`enrollment ${i} answered ${res.status}: ${await res.text()}`);
    const body = (await res.json()) as { serverId: number; secret: string };
    agents[i] = { id: body.serverId, name: status.name, authorization: `Bearer ${body.serverId}.${body.secret}`, status };
  });
  return agents;
}
