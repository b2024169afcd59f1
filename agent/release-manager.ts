import { lstat, mkdir, readdir, readFile, readlink, rename, rm, statfs, symlink } from 'node:fs/promises';
import path from 'node:path';
import { formatBytes } from '../lib/bytes.js';
import { diskErrorCode } from '../lib/disk-errors.js';
import type { Logger } from '../lib/logger.js';
import type { Manifest } from '../lib/manifest.js';
import { extractPayload } from '../lib/payload-extractor.js';
import { z } from 'zod';
import { ConfigurationError } from '../lib/errors.js';
import { compareVersions, isValidVersion } from '../lib/version.js';
import { writeJsonAtomic } from './files.js';
import { runHook, stopInterruptedHook, type HookResult } from './hooks.js';

type HookName = 'hooks/apply' | 'hooks/health';

/**
 * Where an install stands; written before each step so a restart knows what to finish or undo.
 * `hook` is the hook running in this phase, written before it starts: a restart stops what is left
 * of it. Checked when read back: recovery removes DATA/releases/<version>, so a damaged version
 * must never reach a path.
 */
const journalSchema = z.object({
  commandId: z.string().regex(/^[A-Za-z0-9-]{8,64}$/),
  version: z.string().refine(isValidVersion, { error: 'not a version' }),
  previous: z.string().refine(isValidVersion, { error: 'not a version' }).nullable(),
  phase: z.enum(['extracting', 'applying', 'switching', 'checking', 'healthy']),
  hook: z.object({
    name: z.enum(['hooks/apply', 'hooks/health']),
    pgid: z.number().int().positive(),
    startTime: z.number().int().nonnegative(),
    bootId: z.string(),
  }).optional(),
});
type InstallJournal = z.infer<typeof journalSchema>;

export interface InstallOutcome {
  ok: boolean;
  message: string;
  versionBefore: string | null;
  versionAfter: string | null;
}

export interface RecoveredInstall extends InstallOutcome {
  commandId: string;
}

function describeHook(name: string, result: HookResult): string {
  return `${name} failed (${result.outcome})${result.outputTail ? `: ${result.outputTail}` : ''}`;
}

export interface ReleaseOptions {
  /** This server's name, for the messages the master shows. */
  name: string;
  product: string;
  initialVersion: string | null;
  hookTimeoutMs: number;
  keep: number;
  /** Without a declared unpackedSize, a payload may unpack to this many times its size. */
  maxUnpackRatio: number;
}

/**
 * The product releases on this slave: DATA/releases/<version>/ and DATA/current, a symbolic link
 * to the running one, switched atomically (a new link renamed over the old one).
 */
export class ReleaseManager {
  readonly releasesDir: string;
  private readonly currentLink: string;
  private readonly journalFile: string;

  constructor(private readonly dataDir: string, private readonly options: ReleaseOptions, private readonly log: Logger) {
    this.releasesDir = path.join(dataDir, 'releases');
    this.currentLink = path.join(dataDir, 'current');
    this.journalFile = path.join(dataDir, 'install.json');
  }

  async init(): Promise<void> {
    await mkdir(this.releasesDir, { recursive: true });
  }

  /** The installed version, read from disk: the current link, or the version the slave had first. */
  async installedVersion(): Promise<string | null> {
    const target = await readlink(this.currentLink).catch(() => null);
    return target ? path.basename(target) : this.options.initialVersion;
  }

  private async switchTo(version: string | null): Promise<void> {
    if (version === null || version === this.options.initialVersion && !(await this.exists(version))) {
      await rm(this.currentLink, { force: true });
      return;
    }
    const next = `${this.currentLink}.next`;
    await rm(next, { force: true });
    await symlink(path.join('releases', version), next);
    await rename(next, this.currentLink);
  }

  /** Space the releases folder can still take (null when the system cannot tell). */
  private freeBytes(): Promise<number | null> {
    return statfs(this.releasesDir).then((s) => s.bavail * s.bsize, () => null);
  }

  private exists(version: string): Promise<boolean> {
    return lstat(path.join(this.releasesDir, version)).then(() => true, () => false);
  }

  private journal(entry: InstallJournal | null): Promise<void> {
    return entry ? writeJsonAtomic(this.journalFile, entry) : rm(this.journalFile, { force: true });
  }

  private hookEnv(version: string, previous: string | null, dir: string): Record<string, string> {
    return { UPDATE_PRODUCT: this.options.product, UPDATE_VERSION: version, UPDATE_PREVIOUS_VERSION: previous ?? '', UPDATE_RELEASE_DIR: dir };
  }

  /** Runs a hook of the release, the journal naming its process group before it starts. */
  private async hook(name: HookName, dir: string, env: Record<string, string>, entry: InstallJournal): Promise<HookResult | null> {
    const result = await runHook(path.join(dir, name), {
      cwd: dir, env, timeoutMs: this.options.hookTimeoutMs,
      started: (hook) => this.journal({ ...entry, hook: { name, ...hook } }),
    });
    if (result?.leftRunning) this.log.warn(`${name} ended but left processes holding its output; they keep running, their output is no longer read`, { version: entry.version });
    return result;
  }

  /** Installs a verified, staged package. Never leaves the slave without a working release. */
  async install(commandId: string, packageFile: string, manifest: Manifest, allowDowngrade: boolean): Promise<InstallOutcome> {
    const previous = await this.installedVersion();
    const version = manifest.version;
    const base = { versionBefore: previous, versionAfter: previous };
    if (previous !== null && compareVersions(version, previous) === 0) return { ok: true, message: `${this.options.product} ${version} is already installed`, ...base };
    if (previous !== null && compareVersions(version, previous) < 0 && !allowDowngrade) {
      return { ok: false, message: `refusing to downgrade from ${previous} to ${version} (an explicit rollback allows it)`, ...base };
    }
    const needs = manifest.unpackedSize ?? manifest.payload.size;
    const free = await this.freeBytes();
    if (free !== null && free < needs) {
      return { ok: false, message: `not enough disk space on ${this.options.name}: needs ${formatBytes(needs)}, has ${formatBytes(free)}`, ...base };
    }
    const dir = path.join(this.releasesDir, version);
    const partial = `${dir}.partial`;
    await this.journal({ commandId, version, previous, phase: 'extracting' });
    await rm(partial, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
    try {
      await extractPayload(packageFile, { ...manifest.payload, unpackedSize: manifest.unpackedSize }, partial, { maxRatio: this.options.maxUnpackRatio });
      await rename(partial, dir);
    } catch (err) {
      // Nothing half-extracted stays: it would only take the room the next install needs.
      await rm(partial, { recursive: true, force: true });
      await this.journal(null);
      if (diskErrorCode(err)) {
        return { ok: false, message: `not enough disk space on ${this.options.name}: needs more than ${formatBytes(free ?? 0)}, has ${formatBytes(await this.freeBytes() ?? 0)}`, ...base };
      }
      return { ok: false, message: `extraction failed: ${(err as Error).message}`, ...base };
    }

    await this.journal({ commandId, version, previous, phase: 'applying' });
    const env = this.hookEnv(version, previous, dir);
    const applied = await this.hook('hooks/apply', dir, env, { commandId, version, previous, phase: 'applying' });
    if (applied && !applied.ok) {
      await rm(dir, { recursive: true, force: true });
      await this.journal(null);
      return { ok: false, message: `${describeHook('hooks/apply', applied)}; ${previous ?? 'the previous release'} is still installed`, ...base };
    }

    await this.journal({ commandId, version, previous, phase: 'switching' });
    await this.switchTo(version);
    await this.journal({ commandId, version, previous, phase: 'checking' });
    const health = await this.hook('hooks/health', dir, env, { commandId, version, previous, phase: 'checking' });
    if (health && !health.ok) {
      await this.switchTo(previous);
      await rm(dir, { recursive: true, force: true });
      await this.journal(null);
      this.log.warn('release unhealthy, rolled back', { version, previous });
      return { ok: false, message: `${describeHook('hooks/health', health)}; rolled back to ${previous ?? 'the previous release'}`, ...base };
    }
    await this.journal({ commandId, version, previous, phase: 'healthy' });
    await this.prune(version, previous);
    await this.journal(null);
    this.log.info('release installed', { version, previous });
    return { ok: true, message: `installed ${this.options.product} ${version}`, versionBefore: previous, versionAfter: version };
  }

  /** Keeps the newest releases (the current and previous ones always). */
  private async prune(current: string, previous: string | null): Promise<void> {
    const entries = (await readdir(this.releasesDir)).filter((e) => !e.endsWith('.partial'));
    const versions = entries.filter((e) => /^\d+(\.\d+){0,3}$/.test(e)).sort(compareVersions).reverse();
    const keep = new Set([current, ...(previous ? [previous] : []), ...versions.slice(0, this.options.keep)]);
    for (const v of versions) if (!keep.has(v)) await rm(path.join(this.releasesDir, v), { recursive: true, force: true });
  }

  /** The journal a stopped install left, or null; a damaged one stops the agent with what to do. */
  private async readJournal(): Promise<InstallJournal | null> {
    const text = await readFile(this.journalFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    if (text === null) return null;
    let reason: string;
    try {
      const parsed = journalSchema.safeParse(JSON.parse(text));
      if (parsed.success) return parsed.data;
      const issue = parsed.error.issues[0];
      reason = issue ? `${issue.path.join('.') || 'the file'}: ${issue.message}` : 'unreadable';
    } catch (err) {
      reason = `it is not JSON: ${(err as Error).message}`;
    }
    throw new ConfigurationError(`${this.journalFile} is damaged (${reason}): an install was under way when the agent stopped; check that ${this.currentLink} points at the release that should run (or is absent, for the version the server had first), then remove the file`);
  }

  /**
   * After a crash: finishes an install that had passed its health check, undoes any other, and
   * says what happened so the command's result can be reported.
   */
  async recover(): Promise<RecoveredInstall | null> {
    for (const entry of await readdir(this.releasesDir)) {
      if (entry.endsWith('.partial')) await rm(path.join(this.releasesDir, entry), { recursive: true, force: true });
    }
    const journal = await this.readJournal();
    if (!journal) return null;
    const { commandId, version, previous } = journal;
    // Nothing of the interrupted install may go on running while it is finished or undone.
    if (journal.hook) await stopInterruptedHook(journal.hook.name, journal.hook, this.log);
    if (journal.phase === 'healthy') {
      await this.journal(null);
      this.log.warn('agent restarted after a healthy install; completed it', { version });
      return { commandId, ok: true, message: `installed ${this.options.product} ${version}`, versionBefore: previous, versionAfter: version };
    }
    await this.switchTo(previous);
    await rm(path.join(this.releasesDir, version), { recursive: true, force: true });
    await this.journal(null);
    this.log.warn('agent restarted during an install; rolled back', { version, previous, phase: journal.phase });
    return {
      commandId, ok: false,
      message: `the agent stopped during the install of ${version} (${journal.phase}); rolled back to ${previous ?? 'the previous release'}`,
      versionBefore: previous, versionAfter: await this.installedVersion(),
    };
  }
}
