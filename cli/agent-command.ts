import { AGENT_HELP, loadAgentConfig } from '../agent/config.js';
import { startAgent } from '../agent/main.js';
import { untilSignal, type CliIo } from './io.js';

export { AGENT_HELP };

/** Runs the slave agent until SIGTERM or SIGINT. */
export async function agentCommand(args: string[], io: CliIo): Promise<number> {
  const config = loadAgentConfig(args, io.env);
  const agent = await startAgent(config);
  io.err(`Propagator agent "${agent.identity.name}" (${config.mode}) enrolled as server ${agent.identity.serverId} with ${config.masterUrl}${agent.address ? `, listening at ${agent.address}` : ''}`);
  await untilSignal(() => agent.close());
  return 0;
}
