import { createReadStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, statfs, utimes } from 'node:fs/promises';
import path from 'node:path';
import type { AgentCommand } from '../lib/agent-protocol.js';
import { formatBytes } from '../lib/bytes.js';
import { diskErrorCode, DiskSpaceError } from '../lib/disk-errors.js';
import { PackageRejectedError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { Manifest } from '../lib/manifest.js';
import { PackageArchiveReader, type PackageMembers } from '../lib/package-archive.js';
import { verifyMembers, verifyPackage, type VerifiedPackage } from '../lib/package-verifier.js';
import { loadTrustStore } from '../lib/trust-store.js';
import { compareVersions } from '../lib/version.js';
import { readJson, writeJsonAtomic } from './files.js';
import type { MasterClient } from './master-client.js';
import { downloadPackage, DownloadStoppedError, type RetryPolicy } from './package-download.js';

export interface StagedPackage {
  sha256: string;
  product: string;
  version: string;
  file: string;
  manifest: Manifest;
}

/** A reason the package cannot go on this slave (the agent's own checks, whatever the master says). */
export class RefusedPackageError extends Error {
  override name = 'RefusedPackageError';
}

/**
 * Downloads packages into DATA/staging and verifies them with this slave's own trust store: the
 * agent never trusts the master blindly, so an altered file on the master is refused here.
 */
export class Stager {
  readonly dir: string;

  constructor(
    dataDir: string,
    private readonly options: { name: string; product: string; trustPath: string; retryMaxDelayMs: number },
    private readonly client: MasterClient,
    private readonly log: Logger,
  ) {
    this.dir = path.join(dataDir, 'staging');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  private paths(sha256: string) {
    return { pkg: path.join(this.dir, `${sha256}.pkg`), part: path.join(this.dir, `${sha256}.part`), meta: path.join(this.dir, `${sha256}.json`) };
  }

  /** Free bytes where packages are staged (null when the system cannot say). */
  private async freeBytes(): Promise<number | null> {
    return statfs(this.dir).then((s) => s.bavail * s.bsize, () => null);
  }

  private async noRoom(needs: number): Promise<DiskSpaceError> {
    return new DiskSpaceError(`not enough disk space on ${this.options.name}: needs ${formatBytes(needs)}, has ${formatBytes(await this.freeBytes() ?? 0)}`);
  }

  /**
   * Removes partial downloads no running command will resume (left by a command that ended while
   * the agent was stopped, or by an older agent).
   */
  async removeStrayParts(resuming: ReadonlySet<string>): Promise<void> {
    for (const f of (await readdir(this.dir)).filter((n) => n.endsWith('.part'))) {
      if (resuming.has(f.slice(0, -'.part'.length))) continue;
      await rm(path.join(this.dir, f), { force: true });
      this.log.info('partial download removed: no command will resume it', { file: f });
    }
  }

  /** Staged packages not used (staged, or found staged by a command) for `ms`: by their record's age. */
  async unusedFor(ms: number, now = Date.now()): Promise<string[]> {
    const old: string[] = [];
    for (const f of (await readdir(this.dir)).filter((n) => /^[0-9a-f]{64}\.json$/.test(n))) {
      const info = await stat(path.join(this.dir, f)).catch(() => null);
      if (info && now - info.mtimeMs > ms) old.push(f.slice(0, -'.json'.length));
    }
    return old;
  }

  async list(): Promise<StagedPackage[]> {
    const staged: StagedPackage[] = [];
    for (const f of (await readdir(this.dir)).filter((n) => n.endsWith('.json'))) {
      const meta = await readJson<StagedPackage>(path.join(this.dir, f));
      if (meta) staged.push(meta);
    }
    return staged;
  }

  async find(sha256: string): Promise<StagedPackage | null> {
    return readJson<StagedPackage>(this.paths(sha256).meta);
  }

  async remove(sha256: string): Promise<void> {
    const p = this.paths(sha256);
    await Promise.all([rm(p.pkg, { force: true }), rm(p.part, { force: true }), rm(p.meta, { force: true })]);
  }

  /** The checks of this slave: product, minVersion, and no silent downgrade. */
  check(manifest: Manifest, installed: string | null, allowDowngrade: boolean): void {
    if (manifest.product !== this.options.product) {
      throw new RefusedPackageError(`this package is for ${manifest.product}; this server runs ${this.options.product}`);
    }
    if (manifest.minVersion && installed !== null && compareVersions(installed, manifest.minVersion) < 0) {
      throw new RefusedPackageError(`this package needs ${manifest.product} ${manifest.minVersion} or newer; this server runs ${installed}`);
    }
    if (installed !== null && compareVersions(manifest.version, installed) < 0 && !allowDowngrade) {
      throw new RefusedPackageError(`this package (${manifest.version}) is older than the installed version (${installed}); only an explicit rollback may downgrade`);
    }
  }

  /**
   * Verifies a package with this slave's trust store and checks; returns its manifest. `read` is
   * the container as a download already read it; without it, the file is read.
   */
  async verify(file: string, installed: string | null, allowDowngrade: boolean, read?: Promise<PackageMembers>): Promise<Manifest> {
    return (await this.verifyFull(file, installed, allowDowngrade, read)).manifest;
  }

  private async verifyFull(file: string, installed: string | null, allowDowngrade: boolean, read?: Promise<PackageMembers>): Promise<VerifiedPackage> {
    const options = { trust: await loadTrustStore(this.options.trustPath) };
    const verified = await (read ? verifyMembers(read, options) : verifyPackage(file, options));
    this.check(verified.manifest, installed, allowDowngrade);
    return verified;
  }

  /**
   * Stages the command's package (or finds it staged), verified. Throws with the precise reason;
   * whatever the failure, no partial file stays. `deadline` (this agent's clock) ends the retries.
   */
  async stage(command: AgentCommand, installed: string | null, deadline: number): Promise<StagedPackage> {
    const { sha256, size } = command.package;
    const existing = await this.find(sha256);
    const p = this.paths(sha256);
    if (existing) {
      // Re-verified on every use: the trust store may have changed since it was staged.
      existing.manifest = await this.verify(existing.file, installed, command.allowDowngrade);
      // Used now: its record's age is what --drop-staged-after counts.
      const now = new Date();
      await utimes(p.meta, now, now).catch(() => undefined);
      return existing;
    }
    // The container is parsed and the payload hashed as the bytes arrive, so the file is not read
    // again; a download that had to resume was not seen whole and is verified from the file.
    let reader: PackageArchiveReader | null = null;
    let received = 0;
    // Checked before the first byte: a package that cannot fit is refused without a download.
    const have = (await stat(p.part).catch(() => null))?.size ?? 0;
    const free = await this.freeBytes();
    if (free !== null && free < size - have) {
      await rm(p.part, { force: true });
      throw await this.noRoom(size);
    }
    const retry: RetryPolicy = { deadline, maxDelayMs: this.options.retryMaxDelayMs };
    try {
      await downloadPackage(this.client, sha256, p.part, size, (msg, fields) => this.log.info(msg, fields), retry, async (from) => {
        // The signed command names the manifest: a package whose manifest differs is refused as
        // soon as that member has passed, and any byte that cannot belong to a package stops it too.
        const current = new PackageArchiveReader({ manifestSha256: command.package.manifestSha256 });
        reader = current;
        const feed = async (chunk: Buffer) => {
          received += chunk.length;
          if (!current.write(chunk)) await current.drained();
          if (current.done) throw new DownloadStoppedError('the package is refused');
        };
        // A resumed download is checked from its first byte too: what earlier attempts wrote first.
        if (from > 0) for await (const chunk of createReadStream(p.part, { start: 0, end: from - 1, highWaterMark: 1024 * 1024 })) await feed(chunk as Buffer);
        return feed;
      });
    } catch (err) {
      await rm(p.part, { force: true });
      const code = diskErrorCode(err);
      if (code === 'EROFS') throw new DiskSpaceError(`cannot write on ${this.options.name}: the disk of its data folder is read-only (EROFS)`);
      if (code) {
        this.log.error('the disk filled during a download; the partial file was removed', { sha256, code, size });
        throw await this.noRoom(size);
      }
      const early = reader as PackageArchiveReader | null;
      if (err instanceof DownloadStoppedError && early) {
        const reason = await early.members.then(() => err, (refusal: unknown) => refusal);
        this.log.warn('package refused while downloading', { sha256, receivedBytes: received, size, reason: reason instanceof Error ? reason.message : String(reason) });
        throw reason;
      }
      throw err;
    }
    // Set by the observer above; TypeScript cannot follow the assignment through the callback.
    const seen = reader as PackageArchiveReader | null;
    seen?.end();
    let manifest: Manifest;
    try {
      const verified = await this.verifyFull(p.part, installed, command.allowDowngrade, seen?.members);
      manifest = verified.manifest;
      // The signed manifest is the binding between the file and the work: a master that serves
      // another package (even a validly signed one) than the one it announced is refused.
      if (manifest.payload.sha256 !== command.package.payloadSha256 || manifest.version !== command.package.version || manifest.product !== command.package.product) {
        throw new RefusedPackageError(`the package the master served is not the one it announced (${manifest.product} ${manifest.version} instead of ${command.package.product} ${command.package.version}, or another payload)`);
      }
      if (verified.manifestSha256 !== command.package.manifestSha256) {
        throw new RefusedPackageError('the package the master served is not the one it announced (another manifest)');
      }
    } catch (err) {
      await rm(p.part, { force: true });
      if (err instanceof PackageRejectedError || err instanceof RefusedPackageError) this.log.warn('package refused', { sha256, reason: err.message });
      throw err;
    }
    const staged: StagedPackage = { sha256, product: manifest.product, version: manifest.version, file: p.pkg, manifest };
    try {
      await rename(p.part, p.pkg);
      await writeJsonAtomic(p.meta, staged, 0o644);
    } catch (err) {
      // A package without its record is never listed nor used: neither stays.
      await this.remove(sha256);
      if (diskErrorCode(err)) throw await this.noRoom(size);
      throw err;
    }
    this.log.info('package staged', { sha256, version: manifest.version });
    return staged;
  }
}
