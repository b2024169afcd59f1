import { readFileSync } from 'node:fs';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { AgentCommand, CommandResult } from '../lib/agent-protocol.js';
import { diskErrorCode } from '../lib/disk-errors.js';
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
  /** This agent's clock (ms) at which the master gives up on the target (from timeLeftSeconds). */
  deadline?: number;
}

/** Without a deadline from the master (an older master), downloads are retried this long. */
const DEFAULT_TIME_LEFT_MS = 2 * 3600_000;

/** How long a result the master has stays on disk: long enough for any late re-delivery. */
const KEEP_REPORTED_MS = 7 * 24 * 3600_000;
/** Results sent in one report, oldest first (the master takes at most 1,000, and 1 MiB). */
const MAX_RESULTS_PER_REPORT = 100;
/** Records read at start between two turns of the event loop. */
const SCAN_BATCH = 256;

/** Whether a record still matters to the master: running, or a result it has not acknowledged. */
const isOpen = (record: CommandRecord) => !record.reported || record.result.state === 'running';

/**
 * Executes commands one at a time. A command id is executed once: delivered again (lost reply,
 * retried poll, master restart), it answers with the result it already has, and that result is
 * reported again.
 *
 * The open records (running, or not yet acknowledged) are kept in memory, read once at start and
 * updated by every write, so a call to the master reads no file however many records the last
 * week left: with 100,000 of them, reading them all took an idle agent 20 s of CPU a call.
 */
export class CommandRunner {
  onResult: () => void = () => undefined;
  /** How many record files were read: tests check that calls to the master read none. */
  fileReads = 0;
  private queue: Promise<void> = Promise.resolve();
  private pending = 0;
  /** Every read-modify-write of a record: a result must never be overwritten by a stale copy. */
  private readonly records = new Mutex();
  /** The open records by command id; what is on disk once each write is done. */
  private readonly open = new Map<string, CommandRecord>();
  private lastPrune = 0;
  private pruning: Promise<unknown> | null = null;

  constructor(
    private readonly dir: string,
    private readonly deps: { stager: Stager; releases: ReleaseManager; log: Logger },
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await this.prune();
  }

  /**
   * Reads every record: the open ones join the index (those written by another hand too), and
   * results the master acknowledged more than a week ago are deleted, so a slave updated for years
   * does not keep every command it ever ran. Unreported and running records always stay. At start;
   * once a day only file ages are looked at (pruneByAge).
   */
  prune(now = Date.now()): Promise<number> {
    return this.records.lock(async () => {
      let removed = 0;
      const names = (await readdir(this.dir)).filter((f) => f.endsWith('.json'));
      for (const [i, name] of names.entries()) {
        // Read synchronously, a batch at a time: a quarter of the CPU of asynchronous reads (100,000
        // records: 1.5 s instead of 7 s), and other work on the event loop waits only for a batch.
        if (i % SCAN_BATCH === SCAN_BATCH - 1) await new Promise((r) => setImmediate(r));
        const id = name.slice(0, -'.json'.length);
        if (this.open.has(id)) continue;
        const record = this.readFileNow(path.join(this.dir, name));
        if (!record) continue;
        const finished = record.result.finishedAt ? Date.parse(record.result.finishedAt) : NaN;
        if (isOpen(record)) this.open.set(record.command.id, record);
        else if (now - finished > KEEP_REPORTED_MS) {
          await rm(path.join(this.dir, name), { force: true });
          removed++;
        }
      }
      if (removed > 0) this.deps.log.info('old command records removed', { removed });
      this.lastPrune = now;
      return removed;
    });
  }

  /**
   * The daily clean-up of an agent that runs for months: records not open, last written (that is,
   * acknowledged) more than a week ago, go. Their age is the file's; none is read.
   */
  pruneByAge(now = Date.now()): Promise<number> {
    return this.records.lock(async () => {
      let removed = 0;
      for (const name of (await readdir(this.dir)).filter((f) => f.endsWith('.json'))) {
        if (this.open.has(name.slice(0, -'.json'.length))) continue;
        const info = await stat(path.join(this.dir, name)).catch(() => null);
        if (info && now - info.mtimeMs > KEEP_REPORTED_MS) {
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

  /** A record from disk; a damaged one is reported in the log and left for a person to look at. */
  private async readFile(file: string): Promise<CommandRecord | null> {
    this.fileReads++;
    try {
      return await readJson<CommandRecord>(file);
    } catch (err) {
      this.deps.log.error('a command record is damaged; ignored', { file, error: errorMessage(err) });
      return null;
    }
  }

  private readFileNow(file: string): CommandRecord | null {
    this.fileReads++;
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as CommandRecord;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.deps.log.error('a command record is damaged; ignored', { file, error: errorMessage(err) });
      return null;
    }
  }

  /** The record of a command: from memory when open, else from disk (a result reported long ago). */
  private read(id: string): Promise<CommandRecord | null> {
    const open = this.open.get(id);
    return open ? Promise.resolve(open) : this.readFile(this.file(id));
  }

  /**
   * Writes a record, then updates the index: what a call sends is on disk already. On a full (or
   * read-only) disk the record is kept in memory only, so the result still reaches the master (it
   * is written with the next change once there is room).
   */
  private async write(record: CommandRecord): Promise<void> {
    try {
      await writeJsonAtomic(this.file(record.command.id), record);
    } catch (err) {
      const code = diskErrorCode(err);
      if (!code) throw err;
      this.deps.log.error('a command record could not be written: kept in memory', { commandId: record.command.id, code });
    }
    if (isOpen(record)) this.open.set(record.command.id, record);
    else this.open.delete(record.command.id);
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
        await this.write({ ...existing, reported: false });
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
      deadline: Date.now() + (typeof command.timeLeftSeconds === 'number' ? command.timeLeftSeconds * 1000 : DEFAULT_TIME_LEFT_MS),
    };
    await this.write(record);
    this.deps.log.info('command accepted', { commandId: command.id, type: command.type, version: command.package.version });
    this.enqueue(record);
    this.onResult();
    return record.result;
  }

  /**
   * Removes staged packages (by their digest, checked by the answer's schema), except those a
   * running command uses: the master deleted them, or they were never used for too long.
   */
  async dropStaged(digests: Iterable<string>, why: string): Promise<void> {
    const busy = this.runningPackages();
    for (const sha256 of digests) {
      if (busy.has(sha256) || !(await this.deps.stager.find(sha256))) continue;
      await this.deps.stager.remove(sha256);
      this.deps.log.info('staged package dropped', { sha256, reason: why });
    }
  }

  /** The packages of the commands still running: their partial downloads are resumed. */
  runningPackages(): Set<string> {
    return new Set([...this.open.values()].filter((r) => r.result.state === 'running').map((r) => r.command.package.sha256));
  }

  /** After a restart: runs again what was accepted but not finished (each step is idempotent). */
  async resume(): Promise<void> {
    for (const record of this.open.values()) {
      if (record.result.state === 'running') this.enqueue(record);
    }
  }

  /** Records what crash recovery did to an install, as that command's result. */
  recordRecovered(recovered: RecoveredInstall): Promise<void> {
    return this.records.lock(() => this.recordRecoveredLocked(recovered));
  }

  private async recordRecoveredLocked(recovered: RecoveredInstall): Promise<void> {
    const record = await this.read(recovered.commandId);
    if (!record) return;
    await this.write({
      ...record,
      result: {
        ...record.result, state: recovered.ok ? 'succeeded' : 'failed', message: recovered.message,
        versionBefore: recovered.versionBefore, versionAfter: recovered.versionAfter, finishedAt: new Date().toISOString(),
      },
      reported: false,
    });
  }

  /** The results the master does not have yet, oldest first: from memory, no file read. */
  async outbox(): Promise<CommandResult[]> {
    const results: CommandResult[] = [];
    for (const record of this.open.values()) if (!record.reported) results.push(record.result);
    return results.sort((a, b) => a.startedAt.localeCompare(b.startedAt)).slice(0, MAX_RESULTS_PER_REPORT);
  }

  async acknowledge(ids: string[], sent: CommandResult[]): Promise<void> {
    await this.records.lock(() => this.acknowledgeLocked(ids, sent));
    // An agent may run for months without a restart: prune once a day as well, beside the calls.
    if (Date.now() - this.lastPrune > 24 * 3600_000 && !this.pruning) {
      this.pruning = this.pruneByAge()
        .catch((err: unknown) => this.deps.log.error('old command records could not be removed', { error: errorMessage(err) }))
        .finally(() => (this.pruning = null));
    }
  }

  private async acknowledgeLocked(ids: string[], sent: CommandResult[]): Promise<void> {
    for (const id of ids) {
      // Only an open record can be acknowledged; any other id is not news (nothing to read).
      const record = this.open.get(id);
      // Only what was sent counts as received: a result that moved on since is sent again.
      const wasSent = sent.find((r) => r.commandId === id);
      if (record && !record.reported && wasSent && wasSent.state === record.result.state) await this.write({ ...record, reported: true });
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
      await this.records.lock(() => this.write({ ...record, result: { ...record.result, state, message, versionBefore, versionAfter, finishedAt: new Date().toISOString() }, reported: false }));
      log.info('command finished', { commandId: command.id, type: command.type, state, message: message.slice(0, 300) });
      this.onResult();
    };
    try {
      const staged = await stager.stage(command, installed, record.deadline ?? Date.now() + DEFAULT_TIME_LEFT_MS);
      if (command.type === 'propagate') {
        await finish('staged', `staged ${staged.product} ${staged.version}`, installed);
        return;
      }
      const outcome = await releases.install(command.id, staged.file, staged.manifest, command.allowDowngrade);
      if (outcome.ok && outcome.versionAfter === staged.version) await stager.remove(staged.sha256);
      await finish(outcome.ok ? 'succeeded' : 'failed', outcome.message, outcome.versionAfter, outcome.versionBefore);
    } catch (err) {
      const code = diskErrorCode(err);
      await finish('failed', code ? `cannot write on this server's disk (${code}): free some space on it, then try again` : errorMessage(err), installed);
    }
  }
}
