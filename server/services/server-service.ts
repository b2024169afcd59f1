import { NotFoundError } from '../../lib/errors.js';
import { compareVersions } from '../../lib/version.js';
import type { MasterConfig } from '../config.js';
import { clockWarning } from '../clock-offset.js';
import type { ServersRepo } from '../db/servers-repo.js';
import type { ServerStatus, ServerView, SlaveRecord } from '../domain.js';
import type { Logger } from '../../lib/logger.js';
import type { SettingsService } from './settings-service.js';

export interface Parity {
  product: string;
  version: string;
  total: number;
  /** Servers not running the master's product and version (unknown versions included). */
  behind: ServerView[];
}

/** The servers of the domain as the console shows them: the master first, then every slave. */
export class ServerService {
  /** The URL the master listens at, once main.ts knows it (the configured port may be 0). */
  private masterUrl: string | null = null;
  /** Told when a slave is removed, so nothing keeps trusting its credentials. */
  onRemoved: (id: number) => void = () => undefined;

  constructor(
    private readonly servers: ServersRepo,
    private readonly settings: SettingsService,
    private readonly config: Pick<MasterConfig, 'name' | 'host' | 'port' | 'tlsCert' | 'lateAfterMs' | 'offlineAfterMs'>,
    private readonly log: Logger,
  ) {}

  setMasterUrl(url: string): void {
    this.masterUrl = url;
  }

  status(lastSeen: string | null, now: number): ServerStatus {
    if (lastSeen === null) return 'offline';
    const age = now - Date.parse(lastSeen);
    if (age <= this.config.lateAfterMs) return 'online';
    return age <= this.config.offlineAfterMs ? 'late' : 'offline';
  }

  private slaveView(s: SlaveRecord, now: number): ServerView {
    return {
      id: s.id, name: s.name, role: 'slave', mode: s.mode, status: this.status(s.lastSeen, now), product: s.product,
      version: s.version, lastSeen: s.lastSeen, address: s.address, staged: s.staged, freeDiskBytes: s.freeDiskBytes,
      keyFingerprint: s.keyFingerprint, requestedChange: s.requestedChange, clockOffsetMs: s.clockOffsetMs, clockWarning: clockWarning(s.clockOffsetMs, s.mode),
    };
  }

  async list(now = Date.now()): Promise<ServerView[]> {
    const { product, version } = await this.settings.productInfo();
    const scheme = this.config.tlsCert ? 'https' : 'http';
    const master: ServerView = {
      id: 0, name: this.config.name, role: 'master', mode: null, status: 'online', product, version,
      lastSeen: new Date(now).toISOString(), address: this.masterUrl ?? `${scheme}://${this.config.host}:${this.config.port}`, staged: [], freeDiskBytes: null,
      keyFingerprint: null, requestedChange: null, clockOffsetMs: null, clockWarning: null,
    };
    return [master, ...(await this.servers.list()).map((s) => this.slaveView(s, now))];
  }

  async parity(views?: ServerView[]): Promise<Parity> {
    const { product, version } = await this.settings.productInfo();
    const all = views ?? (await this.list());
    const behind = all.filter((s) => s.role === 'slave' && (s.product !== product || s.version === null || compareVersions(s.version, version) !== 0));
    return { product, version, total: all.length, behind };
  }

  async remove(id: number, user: string): Promise<void> {
    const found = await this.servers.findById(id);
    if (!found) throw new NotFoundError(`There is no slave server with id ${id}`);
    await this.servers.delete(id);
    this.onRemoved(id);
    this.log.info('server removed', { id, name: found.name, user });
  }
}
