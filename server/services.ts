import { loadTrustStore } from '../lib/trust-store.js';
import { CommandsRepo } from './db/commands-repo.js';
import { Dispatcher } from './dispatcher.js';
import { OperationsRepo } from './db/operations-repo.js';
import { AWAY_GRACE_MS, OperationsEngine } from './operations-engine.js';
import { OperationService } from './services/operation-service.js';
import { loadMasterKey, loadSharedMasterKey, type MasterKey } from './master-key.js';
import { SingleMaster, type Cluster } from './cluster/cluster.js';
import { MemorySpentSet, SharedSpentSet, type SpentSet } from './cluster/spent-set.js';
import { SpentRepo } from './db/spent-repo.js';
import { checkStoreIdentity } from './store-identity.js';
import { CHALLENGE_TTL_MS } from './agent-sessions.js';
import { NONCE_TTL_MS, ReplayGuard } from './replay-guard.js';
import { AdmissionService } from './services/admission-service.js';
import { AgentService } from './services/agent-service.js';
import { CommandService } from './services/command-service.js';
import type { MasterConfig } from './config.js';
import type { Database } from './db/database.js';
import { PackagesRepo } from './db/packages-repo.js';
import { ServersRepo } from './db/servers-repo.js';
import { SessionsRepo } from './db/sessions-repo.js';
import { SettingsRepo } from './db/settings-repo.js';
import type { Logger } from '../lib/logger.js';
import type { PackageStore } from './package-store.js';
import { AuthService } from './services/auth-service.js';
import { PackageService } from './services/package-service.js';
import { ServerService } from './services/server-service.js';
import { SettingsService } from './services/settings-service.js';

export interface MasterServices {
  auth: AuthService;
  admission: AdmissionService;
  /** The master's signing key (made at first start), for what the routers sign. */
  masterKey: () => Promise<MasterKey>;
  settings: SettingsService;
  packages: PackageService;
  servers: ServerService;
  agents: AgentService;
  commands: CommandService;
  operations: OperationService;
  /** Pushes commands to bidirectional agents; main.ts starts and stops it. */
  dispatcher: Dispatcher;
  /** Releases, times out and settles operation targets; main.ts starts and stops it. */
  engine: OperationsEngine;
  /** The other masters of the database (none on SQLite); its leader runs the dispatcher and the engine. */
  cluster: Cluster;
  /** Refuses agent calls heard twice, at this master or (PostgreSQL) at any other. */
  replays: ReplayGuard;
  /** Several masters (PostgreSQL): refuses a store that is not the one the database's packages are in. */
  checkStore: () => Promise<void>;
}

export interface MasterDeps {
  config: Readonly<MasterConfig>;
  db: Database;
  store: PackageStore;
  log: Logger;
  /** Default: a master on its own, always the leader (SQLite, and masters built by tests). */
  cluster?: Cluster;
}

/** Builds every service from the master's dependencies; nothing here touches the network. */
export function createServices({ config, db, store, log, cluster = new SingleMaster(log) }: MasterDeps): MasterServices {
  const settingsRepo = new SettingsRepo(db);
  const settings = new SettingsService(settingsRepo, log);
  const commandsRepo = new CommandsRepo(db);
  const serversRepo = new ServersRepo(db);
  const packagesRepo = new PackagesRepo(db);
  let key: Promise<MasterKey> | null = null;
  // Several masters share one key (so agents trust each one's signatures), kept in their database.
  const masterKey = () => (key ??= db.engine === 'postgres' ? loadSharedMasterKey(settingsRepo, config.dataDir) : loadMasterKey(config.dataDir));
  const spentRepo = new SpentRepo(db);
  const spent = (ttlMs: number, kind: string, max: number): SpentSet => (db.engine === 'postgres' ? new SharedSpentSet(spentRepo, ttlMs, kind) : new MemorySpentSet(ttlMs, max));
  const admission = new AdmissionService(db, settings, { autoAccept: config.autoAccept, maxPending: 1000 }, log);
  const agents = new AgentService(db, serversRepo, commandsRepo, packagesRepo, admission, masterKey, log,
    { mailboxSessionsPerMinute: config.mailboxSessionsPerMinute, autoAccept: config.autoAccept, spentChallenges: spent(CHALLENGE_TTL_MS, 'challenge', 200_000) });
  admission.onAdmitted = (id) => cluster.publish({ type: 'forget', server: id });
  agents.onIdentityChanged = (id) => cluster.publish({ type: 'forget', server: id });
  const dispatcher = new Dispatcher(commandsRepo, serversRepo, masterKey, log,
    { concurrency: config.pushConcurrency, redeliverAfterMs: 60_000, tickMs: 1000 }, (id) => agents.emit('command', id));
  const commands = new CommandService(commandsRepo, serversRepo, packagesRepo, log, { bidirectionalMs: config.bidirectionalDeadlineMs, mailboxMs: config.mailboxDeadlineMs });
  commands.onQueued = (ids) => cluster.publish({ type: 'work', servers: ids });
  const engine = new OperationsEngine(commandsRepo, new OperationsRepo(db), serversRepo, log,
    { parallelTransfers: config.parallelTransfers, bidirectionalDeadlineMs: config.bidirectionalDeadlineMs, tickMs: 1000, awayGraceMs: AWAY_GRACE_MS }, () => dispatcher.kick());
  // Every change of a target (agent result, delivery, failure to deliver) may free a slot or end an operation.
  agents.on('command', () => engine.kick());
  const operations = new OperationService(db, packagesRepo, serversRepo, settings, { bidirectionalMs: config.bidirectionalDeadlineMs, mailboxMs: config.mailboxDeadlineMs }, log);
  operations.onChange = () => cluster.publish({ type: 'kick' });
  operations.onQueued = (ids) => cluster.publish({ type: 'work', servers: ids });
  const servers = new ServerService(serversRepo, settings, config, log);
  servers.onRemoved = (id) => cluster.publish({ type: 'forget', server: id });

  const packages = new PackageService({
    packages: packagesRepo,
    store,
    loadTrust: () => loadTrustStore(config.trustPath),
    isInUse: (id) => commandsRepo.packageInUse(id),
    log,
    masterId: cluster.id,
    liveMasters: () => cluster.alive(),
  });
  // Whichever master an event happened on, every master hears it (kicks move only the leader).
  cluster.on((event) => {
    if (event.type === 'work') {
      if (event.servers === 'all') void agents.loadWorkIndex().catch((err: unknown) => log.error('could not reload the work index', { error: (err as Error).message }));
      else agents.markWork(event.servers);
      dispatcher.kick();
    } else if (event.type === 'forget') {
      agents.forget(event.server);
    } else if (event.type === 'kick') {
      engine.kick();
    } else {
      agents.forgetAll();
      void agents.loadWorkIndex().catch((err: unknown) => log.error('could not reload the work index', { error: (err as Error).message }));
      engine.kick();
      dispatcher.kick();
    }
  });
  // The background work runs on one master at a time: the leader (always this one on SQLite).
  let purge: NodeJS.Timeout | null = null;
  cluster.onLeadership(async (leader) => {
    if (leader) {
      dispatcher.start();
      engine.start();
      if (db.engine === 'postgres') {
        // Housekeeping of several masters: spent nonces past their life, uploads a dead master left half-stored.
        purge = setInterval(() => {
          void spentRepo.purge(Date.now()).catch((err: unknown) => log.warn('could not purge spent nonces', { error: (err as Error).message }));
          void packages.sweepHalfStored().catch((err: unknown) => log.warn('could not sweep half-stored packages', { error: (err as Error).message }));
        }, 30_000);
        purge.unref();
      }
    } else {
      if (purge) clearInterval(purge);
      await engine.stop();
      await dispatcher.stop();
    }
  });
  return {
    auth: new AuthService(settingsRepo, new SessionsRepo(db), log, {
      masterKey,
      limits: { windowMs: 15 * 60_000, loginsPerAddress: config.loginAttemptsPerWindow, basicPerAddress: config.loginAttemptsPerWindow * 3, perUser: config.loginAttemptsPerUser },
    }),
    admission,
    masterKey,
    settings,
    packages,
    servers,
    agents,
    commands,
    operations,
    dispatcher,
    engine,
    cluster,
    replays: new ReplayGuard(spent(NONCE_TTL_MS, 'nonce', 1_000_000)),
    checkStore: () => (db.engine === 'postgres' ? checkStoreIdentity(store, settingsRepo, packagesRepo) : Promise.resolve()),
  };
}

/** First-start and every-start work: admin password, product settings, store recovery. */
export async function bootstrapMaster(services: MasterServices, config: Readonly<MasterConfig>) {
  const { generatedPassword } = await services.auth.bootstrap(config.adminPassword);
  const { generatedEnrollToken } = await services.settings.init(config);
  await services.checkStore();
  const recovered = await services.packages.recover();
  await services.agents.loadWorkIndex();
  await services.auth.purgeExpiredSessions();
  return { generatedPassword, generatedEnrollToken, recovered };
}
