import { mkdir, statfs } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { AgentStatus } from '../lib/agent-protocol.js';
import { ConfigurationError, errorMessage } from '../lib/errors.js';
import { createLogger, type Logger } from '../lib/logger.js';
import { createAgentApp } from './agent-server.js';
import { CommandRunner } from './command-runner.js';
import type { AgentConfig } from './config.js';
import { loadIdentity, saveIdentity, type Identity } from './identity.js';
import { MasterClient, RefusedError } from './master-client.js';
import { ReleaseManager } from './release-manager.js';
import { ReportLoop } from './report-loop.js';
import { Stager } from './stager.js';

export interface RunningAgent {
  identity: Identity;
  address: string | null;
  loop: ReportLoop;
  close(): Promise<void>;
}

const STOP_WAIT_MS = 30_000;

async function enroll(client: MasterClient, status: AgentStatus, token: string, log: Logger, signal: { stopped: boolean }): Promise<Awaited<ReturnType<MasterClient['enroll']>>> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.enroll(status, token);
    } catch (err) {
      if (err instanceof RefusedError) throw new ConfigurationError(`the master refused the enrollment: ${err.message}`);
      if (signal.stopped) throw err;
      const delay = Math.min(60_000, 1000 * 2 ** Math.min(attempt - 1, 6));
      log.warn('cannot enroll yet; retrying', { attempt, delayMs: delay, error: errorMessage(err) });
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** Starts an agent: recovers from any crash, enrolls if needed, listens (bidirectional), calls the master. */
export async function startAgent(config: Readonly<AgentConfig>, options: { log?: Logger } = {}): Promise<RunningAgent> {
  const log = options.log ?? createLogger({ level: config.logLevel, base: { agent: config.name } });
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const releases = new ReleaseManager(config.dataDir, { name: config.name, product: config.product, initialVersion: config.initialVersion, hookTimeoutMs: config.hookTimeoutMs, keep: config.keepReleases, maxUnpackRatio: config.maxUnpackRatio }, log);
  await releases.init();
  const client = await MasterClient.create(config.masterUrl, config.caFile);
  const stager = new Stager(config.dataDir, { product: config.product, trustPath: config.trustPath }, client, log);
  await stager.init();

  let identity = await loadIdentity(config.dataDir);
  const runner = new CommandRunner(path.join(config.dataDir, 'commands'), {
    identity: () => {
      if (!identity) throw new Error('not enrolled');
      return identity;
    },
    stager, releases, log,
  });
  await runner.init();

  // Finish or undo an install a crash interrupted, before anything else touches the releases.
  const recovered = await releases.recover();
  if (recovered) await runner.recordRecovered(recovered);

  let address: string | null = null;
  let server: http.Server | null = null;
  const status = async (): Promise<AgentStatus> => ({
    name: identity?.name ?? config.name,
    mode: config.mode,
    address,
    product: config.product,
    version: await releases.installedVersion(),
    staged: (await stager.list()).map((s) => ({ sha256: s.sha256, product: s.product, version: s.version })),
    freeDiskBytes: await statfs(config.dataDir).then((s) => s.bavail * s.bsize, () => null),
  });

  if (config.mode === 'bidirectional') {
    server = http.createServer(createAgentApp({ identity: () => identity, runner, status, log }));
    await new Promise<void>((resolve, reject) => {
      server?.once('error', reject);
      server?.listen(config.port, config.host, () => resolve());
    });
    const port = (server.address() as AddressInfo).port;
    address = config.advertiseUrl ?? `http://${config.host === '0.0.0.0' || config.host === '::' ? os.hostname() : config.host}:${port}`;
    log.info('agent listening for the master', { address });
  }

  const signal = { stopped: false };
  if (!identity) {
    if (!config.enrollToken) throw new ConfigurationError(`this agent is not enrolled yet: start it once with --enroll-token (or PROPAGATOR_ENROLL_TOKEN)`);
    const answer = await enroll(client, await status(), config.enrollToken, log, signal);
    identity = { serverId: answer.serverId, secret: answer.secret, masterPublicKey: answer.masterPublicKey, name: config.name, masterUrl: config.masterUrl, enrolledAt: new Date().toISOString() };
    await saveIdentity(config.dataDir, identity);
    log.info('enrolled with the master', { serverId: identity.serverId, master: config.masterUrl });
  } else if (identity.name !== config.name) {
    log.warn('this agent is enrolled under another name; keeping it (delete identity.json to enroll again)', { enrolledAs: identity.name, requested: config.name });
  }
  const enrolled = identity;

  const loop = new ReportLoop(config, { client, identity: () => enrolled, runner, status, log });
  runner.onResult = () => loop.wake();
  await runner.resume();
  loop.start();
  log.info('agent started', { mode: config.mode, version: await releases.installedVersion(), master: config.masterUrl });

  let closing: Promise<void> | null = null;
  return {
    identity: enrolled,
    address,
    loop,
    close: () => {
      closing ??= (async () => {
        signal.stopped = true;
        await loop.stop();
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([runner.idle(), new Promise((r) => (timer = setTimeout(r, STOP_WAIT_MS)))]);
        clearTimeout(timer);
        await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
        log.info('agent stopped');
      })();
      return closing;
    },
  };
}
