import { loadTrustStore } from '../lib/trust-store.js';
import { CommandsRepo } from './db/commands-repo.js';
import { Dispatcher } from './dispatcher.js';
import { OperationsRepo } from './db/operations-repo.js';
import { AWAY_GRACE_MS, OperationsEngine } from './operations-engine.js';
import { OperationService } from './services/operation-service.js';
import { loadMasterKey, type MasterKey } from './master-key.js';
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
}

export interface MasterDeps {
  config: Readonly<MasterConfig>;
  db: Database;
  store: PackageStore;
  log: Logger;
}

/** Builds every service from the master's dependencies; nothing here touches the network. */
export function createServices({ config, db, store, log }: MasterDeps): MasterServices {
  const settingsRepo = new SettingsRepo(db);
  const settings = new SettingsService(settingsRepo, log);
  const commandsRepo = new CommandsRepo(db);
  const serversRepo = new ServersRepo(db);
  const packagesRepo = new PackagesRepo(db);
  let key: Promise<MasterKey> | null = null;
  const masterKey = () => (key ??= loadMasterKey(config.dataDir));
  const admission = new AdmissionService(db, settings, { autoAccept: config.autoAccept, maxPending: 1000 }, log);
  const agents = new AgentService(db, serversRepo, commandsRepo, packagesRepo, admission, masterKey, log, { mailboxSessionsPerMinute: config.mailboxSessionsPerMinute, autoAccept: config.autoAccept });
  admission.onAdmitted = (id) => agents.forget(id);
  const dispatcher = new Dispatcher(commandsRepo, serversRepo, masterKey, log,
    { concurrency: config.pushConcurrency, redeliverAfterMs: 60_000, tickMs: 1000 }, (id) => agents.emit('command', id));
  const commands = new CommandService(commandsRepo, serversRepo, packagesRepo, log, { bidirectionalMs: config.bidirectionalDeadlineMs, mailboxMs: config.mailboxDeadlineMs });
  commands.onQueued = (ids) => {
    agents.markWork(ids);
    dispatcher.kick();
  };
  const engine = new OperationsEngine(commandsRepo, new OperationsRepo(db), serversRepo, log,
    { parallelTransfers: config.parallelTransfers, bidirectionalDeadlineMs: config.bidirectionalDeadlineMs, tickMs: 1000, awayGraceMs: AWAY_GRACE_MS }, () => dispatcher.kick());
  // Every change of a target (agent result, delivery, failure to deliver) may free a slot or end an operation.
  agents.on('command', () => engine.kick());
  const operations = new OperationService(db, packagesRepo, serversRepo, settings, { bidirectionalMs: config.bidirectionalDeadlineMs, mailboxMs: config.mailboxDeadlineMs }, log);
  operations.onChange = () => engine.kick();
  operations.onQueued = (ids) => agents.markWork(ids);
  const servers = new ServerService(serversRepo, settings, config, log);
  servers.onRemoved = (id) => agents.forget(id);
  return {
    auth: new AuthService(settingsRepo, new SessionsRepo(db), log, {
      masterKey,
      limits: { windowMs: 15 * 60_000, loginsPerAddress: config.loginAttemptsPerWindow, basicPerAddress: config.loginAttemptsPerWindow * 3, perUser: config.loginAttemptsPerUser },
    }),
    admission,
    masterKey,
    settings,
    packages: new PackageService({
      packages: packagesRepo,
      store,
      loadTrust: () => loadTrustStore(config.trustPath),
      isInUse: (id) => commandsRepo.packageInUse(id),
      log,
    }),
    servers,
    agents,
    commands,
    operations,
    dispatcher,
    engine,
  };
}

/** First-start and every-start work: admin password, product settings, store recovery. */
export async function bootstrapMaster(services: MasterServices, config: Readonly<MasterConfig>) {
  const { generatedPassword } = await services.auth.bootstrap(config.adminPassword);
  const { generatedEnrollToken } = await services.settings.init(config);
  const recovered = await services.packages.recover();
  await services.agents.loadWorkIndex();
  await services.auth.purgeExpiredSessions();
  return { generatedPassword, generatedEnrollToken, recovered };
}
