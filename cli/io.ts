/** Where a command writes, so tests can run commands in-process and read what they said. */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  env: NodeJS.ProcessEnv;
}

export const processIo: CliIo = {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
  env: process.env,
};

/** A usage mistake: exit status 2 and a hint to read the help. */
export class UsageError extends Error {
  override name = 'UsageError';
}
