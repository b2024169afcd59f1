import { chmod, readFile, statfs } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { keyFingerprint } from '../lib/agent-keys.js';
import { lockDataDir, type DataLock } from '../lib/data-lock.js';
import type { AgentStatus, EnrollResponse } from '../lib/agent-protocol.js';
import { ConfigurationError, errorMessage } from '../lib/errors.js';
import { createLogger, type Logger } from '../lib/logger.js';
import { createAgentApp } from './agent-server.js';
import { NonceCache } from './nonce-cache.js';
import { CommandRunner } from './command-runner.js';
import type { AgentConfig } from './config.js';
import { loadAgentKey, loadIdentity, saveIdentity, type AgentKey, type Identity } from './identity.js';
import { MasterAnswerError, MasterClient, RefusedError } from './master-client.js';
import { ReleaseManager } from './release-manager.js';
import { ReportLoop, withJitter } from './report-loop.js';
import { Stager } from './stager.js';

export interface RunningAgent {
  identity: Identity;
  address: string | null;
  loop: ReportLoop;
  close(): Promise<void>;
}

const STOP_WAIT_MS = 30_000;

/** Retries while the master cannot be reached; a refusal is final. */
async function enroll(client: MasterClient, status: AgentStatus, token: string, log: Logger, signal: { stopped: boolean }): Promise<EnrollResponse> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.enroll(status, token);
    } catch (err) {
      if (err instanceof RefusedError) throw new ConfigurationError(`the master refused the enrollment: ${err.message}`);
      if (err instanceof MasterAnswerError && err.status < 500) throw new ConfigurationError(`the master refused the enrollment: ${err.message}`);
      if (signal.stopped) throw err;
      const delay = Math.min(60_000, 1000 * 2 ** Math.min(attempt - 1, 6));
      log.warn('cannot enroll yet; retrying', { attempt, delayMs: delay, error: errorMessage(err) });
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/**
 * Until the administrator accepts this server (New servers in the console): asks where the
 * enrollment stands, at the polling rhythm. A rejection is final.
 */
async function awaitAcceptance(client: MasterClient, config: Readonly<AgentConfig>, key: AgentKey, log: Logger, signal: { stopped: boolean }): Promise<number> {
  let delay = config.pollMinMs;
  let told = false;
  for (;;) {
    try {
      const answer = await client.openSession();
      if (answer.state === 'accepted' && answer.serverId !== null) return answer.serverId;
      if (answer.state === 'rejected') throw new ConfigurationError(`the administrator rejected this server ("${config.name}", key ${key.fingerprint}); remove its data folder's identity.json and agent-key.pem to ask again`);
      if (!told) log.warn('waiting for the administrator to accept this server in the master console (New servers)', { name: config.name, keyFingerprint: key.fingerprint });
      told = true;
    } catch (err) {
      if (err instanceof ConfigurationError) throw err;
      // A refusal is not final here: only a signed "rejected" is (anyone on the network can refuse).
      log.warn(err instanceof RefusedError ? 'the master refused this agent; asking again' : 'cannot ask the master about this server yet; retrying', { error: errorMessage(err) });
    }
    if (signal.stopped) throw new ConfigurationError('stopped while waiting for the administrator');
    await new Promise((r) => setTimeout(r, withJitter(delay)));
    delay = Math.min(config.pollMaxMs, Math.round(delay * 1.5));
  }
}

async function readEnrollToken(config: Readonly<AgentConfig>): Promise<string | null> {
  if (config.enrollTokenFile) {
    const text = await readFile(config.enrollTokenFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new ConfigurationError(`cannot read the enrollment token file ${config.enrollTokenFile}: ${err.code ?? err.message}`);
    });
    return text.trim() || null;
  }
  return config.enrollToken;
}

/**
 * Starts an agent: recovers from any crash, enrolls if needed, listens (bidirectional), calls the
 * master. The data folder is locked first: a second agent on it is refused before it touches anything.
 */
export async function startAgent(config: Readonly<AgentConfig>, options: { log?: Logger } = {}): Promise<RunningAgent> {
  const lock = await lockDataDir(config.dataDir, 'agent');
  try {
    return await startLocked(config, lock, options);
  } catch (err) {
    await lock.release();
    throw err;
  }
}

async function startLocked(config: Readonly<AgentConfig>, lock: DataLock, options: { log?: Logger }): Promise<RunningAgent> {
  const log = options.log ?? createLogger({ level: config.logLevel, base: { agent: config.name } });
  // Owner-only whatever the folder was before: it holds the agent's key.
  await chmod(config.dataDir, 0o700);
  // Who this agent is, first: a damaged identity or key stops it before it touches anything.
  const saved = await loadIdentity(config.dataDir);
  let identity = saved.identity;
  const key = await loadAgentKey(config.dataDir, { create: identity === null, expected: identity?.keyFingerprint });
  if (key.created) log.info('agent key created', { keyFingerprint: key.fingerprint });
  const releases = new ReleaseManager(config.dataDir, { name: config.name, product: config.product, initialVersion: config.initialVersion, hookTimeoutMs: config.hookTimeoutMs, keep: config.keepReleases, maxUnpackRatio: config.maxUnpackRatio }, log);
  await releases.init();
  const client = await MasterClient.create(config.masterUrl, config.caFile, key, { name: identity?.name ?? config.name, masterFingerprint: config.masterFingerprint });
  if (identity) client.setMasterKey(identity.masterPublicKey);
  const stager = new Stager(config.dataDir, { name: config.name, product: config.product, trustPath: config.trustPath, retryMaxDelayMs: config.downloadRetryMaxMs }, client, log);
  await stager.init();
  const runner = new CommandRunner(path.join(config.dataDir, 'commands'), { stager, releases, log });
  await runner.init();
  await stager.removeStrayParts(runner.runningPackages());

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
    const nonces = new NonceCache(path.join(config.dataDir, 'seen-nonces.json'));
    await nonces.load();
    server = http.createServer(createAgentApp({ identity: () => identity, runner, status, log, nonces }));
    // Only the master calls here, with small signed requests: slow or idle strangers are cut early.
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    server.keepAliveTimeout = 5_000;
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
    const token = await readEnrollToken(config);
    if (!token) {
      throw new ConfigurationError(saved.legacy
        ? 'this agent enrolled before agents had keys: enroll it again with an enrollment token (PROPAGATOR_ENROLL_TOKEN or --enroll-token-file); the administrator accepts its new key in New servers'
        : 'this agent is not enrolled yet: start it once with an enrollment token (PROPAGATOR_ENROLL_TOKEN, or --enroll-token-file FILE)');
    }
    const answer = await enroll(client, await status(), token, log, signal);
    client.setMasterKey(answer.masterPublicKey);
    identity = {
      name: config.name, masterUrl: config.masterUrl, masterPublicKey: answer.masterPublicKey, keyFingerprint: key.fingerprint,
      serverId: answer.serverId, state: answer.state === 'accepted' ? 'accepted' : 'pending', enrolledAt: new Date().toISOString(),
    };
    await saveIdentity(config.dataDir, identity);
    log.info(answer.state === 'accepted' ? 'enrolled with the master' : 'enrollment sent; the administrator must accept this server', { serverId: answer.serverId, master: config.masterUrl, keyFingerprint: key.fingerprint, masterKey: keyFingerprint(answer.masterPublicKey) });
  } else if (identity.name !== config.name) {
    log.warn('this agent is enrolled under another name; keeping it (delete identity.json to enroll again)', { enrolledAs: identity.name, requested: config.name });
  }
  if (identity.state !== 'accepted' || identity.serverId === null) {
    const serverId = await awaitAcceptance(client, config, key, log, signal);
    identity = { ...identity, serverId, state: 'accepted' };
    await saveIdentity(config.dataDir, identity);
    log.info('accepted by the administrator', { serverId });
  }
  const enrolled = identity;

  const loop = new ReportLoop(config, { client, runner, status, log });
  runner.onResult = () => loop.wake();
  await runner.resume();
  loop.start();
  // Staged packages nobody applied: dropped after --drop-staged-after, checked at start and hourly.
  const dropUnused = () => stager.unusedFor(config.dropStagedAfterMs)
    .then((old) => runner.dropStaged(old, `not used for ${config.dropStagedAfterMs / 86_400_000} days`))
    .catch((err: unknown) => log.error('unused staged packages could not be removed', { error: errorMessage(err) }));
  await dropUnused();
  const dropTimer = setInterval(() => void dropUnused(), Math.max(1000, Math.min(3600_000, config.dropStagedAfterMs)));
  dropTimer.unref();
  log.info('agent started', { mode: config.mode, version: await releases.installedVersion(), master: config.masterUrl });

  let closing: Promise<void> | null = null;
  return {
    identity: enrolled,
    address,
    loop,
    close: () => {
      closing ??= (async () => {
        signal.stopped = true;
        clearInterval(dropTimer);
        await loop.stop();
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([runner.idle(), new Promise((r) => (timer = setTimeout(r, STOP_WAIT_MS)))]);
        clearTimeout(timer);
        await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
        await lock.release();
        log.info('agent stopped');
      })();
      return closing;
    },
  };
}
