import { ConfigurationError, PropagatorError, ValidationError, errorMessage } from '../lib/errors.js';
import { escapeControl } from '../lib/text.js';
import { AGENT_HELP, agentCommand } from './agent-command.js';
import { CERTS_HELP, certsInit } from './certs-command.js';
import { DATABASE_HELP, databaseCopy } from './database-command.js';
import { DEMO_HELP, demoCommand } from './demo-command.js';
import { MASTER_HELP, masterCommand } from './master-command.js';
import { processIo, UsageError, type CliIo } from './io.js';
import { PACKAGE_HELP, packageBuild, packageVerify } from './package-commands.js';
import { TOKEN_HELP, tokenCreate } from './token-command.js';

type Command = (args: string[], io: CliIo) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  'package build': packageBuild,
  'package verify': packageVerify,
  'certs init': certsInit,
  'token create': tokenCreate,
  'database copy': databaseCopy,
  master: masterCommand,
  agent: agentCommand,
  demo: demoCommand,
};

const HELP = `Propagator: signed update packages, verified and applied across a print-server domain.

Usage:
${PACKAGE_HELP}
${CERTS_HELP}
${MASTER_HELP}
${AGENT_HELP}
${TOKEN_HELP}
${DATABASE_HELP}
${DEMO_HELP}
propagator help | --help | --version`;

function isUsageProblem(err: unknown): boolean {
  // util.parseArgs reports unknown or malformed flags as TypeErrors with ERR_PARSE_ARGS_* codes.
  const code = (err as { code?: unknown }).code;
  return err instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'));
}

/** Runs one command line; returns the exit status. Never calls process.exit, so tests can call it. */
export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  const [first, second, ...rest] = argv;
  if (first === undefined || first === 'help' || first === '--help' || first === '-h') {
    io.out(HELP);
    return first === undefined ? 2 : 0;
  }
  if (first === '--version') {
    io.out('propagator 0.2.0');
    return 0;
  }
  // Two-word commands ("package build") first, then one-word ones ("master").
  const twoWords = COMMANDS[`${first} ${second ?? ''}`];
  const command = twoWords ?? COMMANDS[first];
  const args = twoWords ? rest : argv.slice(1);
  try {
    if (!command) throw new UsageError(`unknown command: ${[first, second].filter(Boolean).join(' ')}`);
    return await command(args, io);
  } catch (err) {
    // A message may quote a package (a certificate's subject, a member's name): escaped, it
    // cannot drive the terminal.
    if (isUsageProblem(err)) {
      io.err(`propagator: ${escapeControl(errorMessage(err))}\nRun "propagator help" for usage.`);
      return 2;
    }
    if (err instanceof ValidationError || err instanceof ConfigurationError) {
      io.err(`propagator: ${escapeControl(err.message)}`);
      return 2;
    }
    io.err(`propagator: ${escapeControl(err instanceof PropagatorError ? err.message : `unexpected error: ${errorMessage(err)}`)}`);
    return 1;
  }
}
