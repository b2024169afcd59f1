import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { AgentCommand, CommandResult } from '../lib/agent-protocol.js';
import { errorMessage } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { Mutex } from '../lib/mutex.js';
import { readJson, writeJsonAtomic } from './files.js';
import type { RecoveredInstall, ReleaseManager } from './release-manager.js';
import type { Stager } from './stager.js';

/** DATA/commands/<id>.json: the command, where it stands, and whether the master has the result. */
interface CommandRecord {
  command: AgentCommand;
  result: CommandResult;
  reported: boolean;
}

/** How long a result the master has stays on disk: long enough for any late re-delivery. */
const KEEP_REPORTED_MS = 7 * 24 * 3600_000;

/**
 * Executes commands one at a time. A command id is executed once: delivered again (lost reply,
 * retried poll, master restart), it answers with the result it already has, and that result is
 * reported again.
 */
export class CommandRunner {
  onResult: () => void = () => undefined;
  private queue: Promise<void> = Promise.resolve();
  private pending = 0;
  /** Every read-modify-write of a record: a result must never be overwritten by a stale copy. */
  private readonly records = new Mutex();
  private lastPrune = 0;

  constructor(
    private readonly dir: string,
    private readonly deps: { stager: Stager; releases: ReleaseManager; log: Logger },
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await this.prune();
  }

  /**
   * Deletes records the master acknowledged more than a week ago. Every call to the master reads
   * the records still to report, so without this a slave updated for years would read every
   * command it ever ran, twice a call. Unreported and running records always stay.
   */
  prune(now = Date.now()): Promise<number> {
    return this.records.lock(async () => {
      let removed = 0;
      for (const name of (await readdir(this.dir)).filter((f) => f.endsWith('.json'))) {
        const record = await readJson<CommandRecord>(path.join(this.dir, name));
        const finished = record?.result.finishedAt ? Date.parse(record.result.finishedAt) : NaN;
        if (record?.reported && record.result.state !== 'running' && now - finished > KEEP_REPORTED_MS) {
          await rm(path.join(this.dir, name), { force: true });
          removed++;
        }
      }
      if (removed > 0) this.deps.log.info('old command records removed', { removed });
      this.lastPrune = now;
      return removed;
    });
  }

  private file(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }

  private read(id: string): Promise<CommandRecord | null> {
    return readJson<CommandRecord>(this.file(id));
  }

  private write(record: CommandRecord): Promise<void> {
    return writeJsonAtomic(this.file(record.command.id), record);
  }

  busy(): boolean {
    return this.pending > 0;
  }

  /** Resolves when no command is executing. */
  async idle(): Promise<void> {
    await this.queue;
  }

  submit(command: AgentCommand): Promise<CommandResult> {
    return this.records.lock(() => this.submitLocked(command));
  }

  private async submitLocked(command: AgentCommand): Promise<CommandResult> {
    const existing = await this.read(command.id);
    if (existing) {
      if (existing.reported && existing.result.state !== 'running') {
        existing.reported = false;
        await this.write(existing);
        this.onResult();
      }
      return existing.result;
    }
    const record: CommandRecord = {
      command,
      result: {
        commandId: command.id, state: 'running', message: `${command.type} of ${command.package.product} ${command.package.version} accepted`,
        versionBefore: await this.deps.releases.installedVersion(), versionAfter: null, startedAt: new Date().toISOString(), finishedAt: null,
      },
      reported: false,
    };
    await this.write(record);
    this.deps.log.info('command accepted', { commandId: command.id, type: command.type, version: command.package.version });
    this.enqueue(record);
    this.onResult();
    return record.result;
  }

  /** After a restart: runs again what was accepted but not finished (each step is idempotent). */
  async resume(): Promise<void> {
    for (const name of (await readdir(this.dir)).filter((f) => f.endsWith('.json'))) {
      const record = await readJson<CommandRecord>(path.join(this.dir, name));
      if (record?.result.state === 'running') this.enqueue(record);
    }
  }

  /** Records what crash recovery did to an install, as that command's result. */
  recordRecovered(recovered: RecoveredInstall): Promise<void> {
    return this.records.lock(() => this.recordRecoveredLocked(recovered));
  }

  private async recordRecoveredLocked(recovered: RecoveredInstall): Promise<void> {
    const record = await this.read(recovered.commandId);
    if (!record) return;
    record.result = {
      ...record.result, state: recovered.ok ? 'succeeded' : 'failed', message: recovered.message,
      versionBefore: recovered.versionBefore, versionAfter: recovered.versionAfter, finishedAt: new Date().toISOString(),
    };
    record.reported = false;
    await this.write(record);
  }

  async outbox(): Promise<CommandResult[]> {
    const results: CommandResult[] = [];
    for (const name of (await readdir(this.dir)).filter((f) => f.endsWith('.json'))) {
      const record = await readJson<CommandRecord>(path.join(this.dir, name));
      if (record && !record.reported) results.push(record.result);
    }
    return results.sort((a, b) => a.startedAt.localeCompare(b.startedAt));
  }

  async acknowledge(ids: string[], sent: CommandResult[]): Promise<void> {
    await this.records.lock(() => this.acknowledgeLocked(ids, sent));
    // An agent may run for months without a restart: prune once a day as well.
    if (Date.now() - this.lastPrune > 24 * 3600_000) await this.prune();
  }

  private async acknowledgeLocked(ids: string[], sent: CommandResult[]): Promise<void> {
    for (const id of ids) {
      const record = await this.read(id);
      // Only what was sent counts as received: a result that moved on since is sent again.
      const wasSent = sent.find((r) => r.commandId === id);
      if (record && wasSent && wasSent.state === record.result.state) {
        record.reported = true;
        await this.write(record);
      }
    }
  }

  private enqueue(record: CommandRecord): void {
    this.pending++;
    this.queue = this.queue
      .then(() => this.execute(record))
      .catch((err: unknown) => this.deps.log.error('command runner failed', { commandId: record.command.id, error: errorMessage(err) }))
      .finally(() => {
        this.pending--;
      });
  }

  private async execute(record: CommandRecord): Promise<void> {
    const { command } = record;
    const { stager, releases, log } = this.deps;
    const installed = await releases.installedVersion();
    const finish = async (state: CommandResult['state'], message: string, versionAfter: string | null, versionBefore = installed) => {
      record.result = { ...record.result, state, message, versionBefore, versionAfter, finishedAt: new Date().toISOString() };
      record.reported = false;
      await this.records.lock(() => this.write(record));
      log.info('command finished', { commandId: command.id, type: command.type, state, message: message.slice(0, 300) });
      this.onResult();
    };
    try {
      const staged = await stager.stage(command, installed);
      if (command.type === 'propagate') {
        await finish('staged', `staged ${staged.product} ${staged.version}`, installed);
        return;
      }
      const outcome = await releases.install(command.id, staged.file, staged.manifest, command.allowDowngrade);
      if (outcome.ok && outcome.versionAfter === staged.version) await stager.remove(staged.sha256);
      await finish(outcome.ok ? 'succeeded' : 'failed', outcome.message, outcome.versionAfter, outcome.versionBefore);
    } catch (err) {
      await finish('failed', errorMessage(err), installed);
    }
  }
}
