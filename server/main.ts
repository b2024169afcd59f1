import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { keyFingerprint } from '../lib/agent-keys.js';
import { lockDataDir, type DataLock } from '../lib/data-lock.js';
import { loadTrustStore } from '../lib/trust-store.js';
import { errorMessage } from '../lib/errors.js';
import { createApp } from './app.js';
import type { MasterConfig } from './config.js';
import { createCluster } from './cluster/create-cluster.js';
import { openDatabase } from './db/open-database.js';
import { createLogger, type Logger } from '../lib/logger.js';
import { openPackageStore } from './open-store.js';
import { bootstrapMaster, createServices } from './services.js';

export interface RunningMaster {
  url: string;
  port: number;
  close(): Promise<void>;
}

const SHUTDOWN_GRACE_MS = 30_000;
/** An idle kept-alive connection is closed after this (Node's default, stated: clients see it in Keep-Alive). */
const KEEP_ALIVE_MS = 5_000;

/**
 * Opens the data folder and database, bootstraps, and listens. The only place that listens. The
 * data folder is locked first: a second master on it is refused before it touches anything.
 */
export async function startMaster(config: Readonly<MasterConfig>, options: { log?: Logger; announce?: (text: string) => void } = {}): Promise<RunningMaster> {
  const lock = await lockDataDir(config.dataDir, 'master');
  try {
    return await startLocked(config, lock, options);
  } catch (err) {
    await lock.release();
    throw err;
  }
}

async function startLocked(config: Readonly<MasterConfig>, lock: DataLock, options: { log?: Logger; announce?: (text: string) => void }): Promise<RunningMaster> {
  const log = options.log ?? createLogger({ level: config.logLevel });
  const announce = options.announce ?? ((text: string) => process.stderr.write(`${text}\n`));
  const store = await openPackageStore(config);
  await store.init();
  const db = await openDatabase(config.database, { onIdleError: (err) => log.warn('a database connection broke while idle', { error: err.message }) });
  const cluster = createCluster(db, config.database, log, config.name);
  const services = createServices({ config, db, store, log, cluster });
  const secrets = await bootstrapMaster(services, config);
  const app = createApp({ config, db, store, log, services });

  // Timeouts are checked every second (Node's default, 30 s, would let a 20 s limit run to 50 s).
  const timing = { connectionsCheckingInterval: 1_000, headersTimeout: config.headersTimeoutMs, keepAliveTimeout: KEEP_ALIVE_MS };
  const server = config.tlsCert && config.tlsKey
    ? https.createServer({ ...timing, cert: await readFile(config.tlsCert), key: await readFile(config.tlsKey), handshakeTimeout: config.headersTimeoutMs }, app)
    : http.createServer(timing, app);
  // Node's request timeout covers every request alike: long enough for a 4 GiB upload over a slow
  // link, it would let slow clients hold the small routes for as long. Off here; http/timeouts.ts
  // gives each request its deadline, and uploads the idle timeout instead.
  server.requestTimeout = 0;
  // No byte moving either way for this long closes the connection (a silent client; package downloads have their own send timeout).
  server.timeout = config.idleTimeoutMs;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const scheme = config.tlsCert ? 'https' : 'http';
  const shownHost = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  const url = `${scheme}://${shownHost}:${port}`;
  services.servers.setMasterUrl(url);
  // The background work (dispatcher, operations engine) starts here, on the leader of the masters.
  await cluster.start();
  log.info('master started', { url, dataDir: config.dataDir, store: store.description, trust: config.trustPath, tls: Boolean(config.tlsCert) });

  const lines = [`Propagator master: ${url}  (data ${config.dataDir})`];
  if (secrets.generatedPassword) lines.push(`  Admin password (generated, shown only now): admin / ${secrets.generatedPassword}`);
  if (secrets.generatedEnrollToken) lines.push(`  Enrollment token for slaves (generated, shown only now): ${secrets.generatedEnrollToken}`);
  lines.push(`  Master key fingerprint: ${keyFingerprint((await services.masterKey()).publicPem)} (agents may pin it: --master-fingerprint)`);
  lines.push(config.autoAccept
    ? '  New servers are accepted as they enroll (--auto-accept): use it on trusted networks only.'
    : '  New servers wait for you to accept them in the console (New servers).');
  await loadTrustStore(config.trustPath).catch((err: unknown) => lines.push(`  Warning: ${errorMessage(err)}; every package will be refused until it holds a root CA certificate.`));
  announce(lines.join('\n'));

  let closing: Promise<void> | null = null;
  const close = () => {
    closing ??= (async () => {
      log.info('master stopping: finishing requests in progress');
      const force = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      clearTimeout(force);
      // The leader's background work stops here; on PostgreSQL another master takes it over.
      await cluster.stop();
      await services.agents.flush();
      await db.close();
      store.close?.();
      await lock.release();
      log.info('master stopped');
    })();
    return closing;
  };
  return { url, port, close };
}
