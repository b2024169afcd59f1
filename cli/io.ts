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

/** Resolves on the first SIGTERM or SIGINT, after `stop` (a service's graceful close) has run. */
export function untilSignal(stop: () => Promise<void> = async () => undefined): Promise<void> {
  return new Promise((resolve) => {
    const onSignal = () => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      stop().then(resolve, resolve);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
