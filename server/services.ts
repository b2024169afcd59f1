import { loadTrustStore } from '../lib/trust-store.js';
import type { MasterConfig } from './config.js';
import type { Database } from './db/database.js';
import { PackagesRepo } from './db/packages-repo.js';
import { ServersRepo } from './db/servers-repo.js';
import { SessionsRepo } from './db/sessions-repo.js';
import { SettingsRepo } from './db/settings-repo.js';
import type { Logger } from './logger.js';
import type { PackageStore } from './package-store.js';
import { AuthService } from './services/auth-service.js';
import { PackageService } from './services/package-service.js';
import { ServerService } from './services/server-service.js';
import { SettingsService } from './services/settings-service.js';

export interface MasterServices {
  auth: AuthService;
  settings: SettingsService;
  packages: PackageService;
  servers: ServerService;
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
  return {
    auth: new AuthService(settingsRepo, new SessionsRepo(db), log),
    settings,
    packages: new PackageService({
      packages: new PackagesRepo(db),
      store,
      loadTrust: () => loadTrustStore(config.trustPath),
      // Operations (and so packages in use) arrive with the operations engine.
      isInUse: async () => false,
      log,
    }),
    servers: new ServerService(new ServersRepo(db), settings, config, log),
  };
}

/** First-start and every-start work: admin password, product settings, store recovery. */
export async function bootstrapMaster(services: MasterServices, config: Readonly<MasterConfig>) {
  const { generatedPassword } = await services.auth.bootstrap(config.adminPassword);
  const { generatedEnrollToken } = await services.settings.init(config);
  const recovered = await services.packages.recover();
  await services.auth.purgeExpiredSessions();
  return { generatedPassword, generatedEnrollToken, recovered };
}
