import { loadMasterConfig, MASTER_OPTIONS_HELP } from '../server/config.js';
import { startMaster } from '../server/main.js';
import { untilSignal, type CliIo } from './io.js';

export const MASTER_HELP = MASTER_OPTIONS_HELP;

/** Runs the master until SIGTERM or SIGINT, then stops gracefully. */
export async function masterCommand(args: string[], io: CliIo): Promise<number> {
  const config = loadMasterConfig(args, io.env);
  const master = await startMaster(config, { announce: (text) => io.err(text) });
  await untilSignal(() => master.close());
  return 0;
}
