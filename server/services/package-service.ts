import { readPackageArchive } from '../../lib/package-archive.js';
import { ConflictError, NotFoundError, PackageRejectedError, errorMessage } from '../../lib/errors.js';
import { verifyPackage } from '../../lib/package-verifier.js';
import type { TrustStore } from '../../lib/trust-store.js';
import { isUniqueViolation } from '../db/database.js';
import type { PackagesRepo } from '../db/packages-repo.js';
import type { StoredPackage } from '../domain.js';
import type { Logger } from '../../lib/logger.js';
import { SHARED_SAFE_AGE_MS, type PackageStore } from '../package-store.js';

/** A master silent this long is dead (it writes its row every second). */
const HALF_STORED_GRACE_MS = 30_000;

export interface UploadedFile {
  tempPath: string;
  size: number;
  sha256: string;
}

export type DisplayState = 'valid' | 'expired' | 'missing';

export interface PackageServiceDeps {
  packages: PackagesRepo;
  store: PackageStore;
  /** Read on every upload, so a root added to the trust store counts without a restart. */
  loadTrust: () => Promise<TrustStore>;
  /** True while an operation in progress uses the package (the operations engine answers). */
  isInUse: (packageId: number) => Promise<boolean>;
  log: Logger;
  /** This master, as package rows it is storing name it. */
  masterId?: string;
  /** Several masters: the ids of those alive now (null: this master is alone). */
  liveMasters?: () => Promise<Set<string> | null>;
}

function nameConflict(name: string) {
  return new ConflictError(`An update named "${name}" already exists`);
}

/**
 * Adding, listing and deleting update packages. A package row goes through "storing" while its
 * file moves into the store, so a crash at any point leaves either nothing or a complete package
 * (recover() removes the rest at the next start).
 */
export class PackageService {
  constructor(private readonly deps: PackageServiceDeps) {}

  async add(upload: UploadedFile, name: string, user: string): Promise<StoredPackage> {
    const { packages, store, log } = this.deps;
    try {
      if (await packages.findByName(name)) throw nameConflict(name);
      const same = await packages.findBySha256(upload.sha256);
      if (same) throw new ConflictError(`This package is already stored as "${same.name}"`);
      const verified = await verifyPackage(upload.tempPath, { trust: await this.deps.loadTrust() }).catch((err: unknown) => {
        if (err instanceof PackageRejectedError) log.warn('package rejected', { name, user, size: upload.size, sha256: upload.sha256, reason: err.message });
        throw err;
      });
      const { manifest } = verified;
      let id: number;
      try {
        id = await packages.insert({
          name,
          product: manifest.product,
          version: manifest.version,
          size: upload.size,
          sha256: upload.sha256,
          payload: verified.payload,
          manifestSha256: verified.manifestSha256,
          manifest,
          signer: verified.signer.subject,
          chain: verified.chain,
          signerNotAfter: verified.signer.notAfter,
          expires: manifest.expires ?? null,
          minVersion: manifest.minVersion ?? null,
          description: manifest.description ?? null,
          state: 'storing',
          uploadedBy: user,
          uploadedAt: new Date().toISOString(),
        }, this.deps.masterId ?? null);
      } catch (err) {
        if (isUniqueViolation(err, 'packages', 'name')) throw nameConflict(name);
        if (isUniqueViolation(err, 'packages', 'sha256')) throw new ConflictError('This package is already stored under another name');
        throw err;
      }
      try {
        const outcome = await store.commit(upload.tempPath, upload.sha256, upload.size);
        if (outcome === 'already-stored') log.info('package already in the store (another master stored it): not written again', { id, sha256: upload.sha256, store: store.description });
      } catch (err) {
        await packages.delete(id);
        throw err;
      }
      if (!(await packages.setState(id, 'valid'))) {
        throw new ConflictError('The master took too long to store this package, and another master removed it as abandoned; upload it again');
      }
      log.info('package added', { id, name, user, product: manifest.product, version: manifest.version, size: upload.size, sha256: upload.sha256, signer: verified.signer.subject });
      return (await packages.findById(id)) as StoredPackage;
    } finally {
      await store.discard(upload.tempPath);
    }
  }

  list(): Promise<StoredPackage[]> {
    return this.deps.packages.list();
  }

  async get(id: number): Promise<StoredPackage> {
    const found = await this.deps.packages.findById(id);
    if (!found || found.state === 'storing') throw new NotFoundError(`There is no update with id ${id}`);
    return found;
  }

  async delete(id: number, user: string): Promise<StoredPackage> {
    const found = await this.get(id);
    if (await this.deps.isInUse(id)) throw new ConflictError(`The update "${found.name}" is used by an operation in progress; cancel it or wait until it ends`);
    await this.deps.packages.delete(id);
    // The row is gone: the file left by a store that cannot be reached now is an orphan, removed at a later start.
    await this.deps.store.remove(found.sha256).catch((err: unknown) => {
      this.deps.log.warn('the deleted package stays in the store until a later start removes it', { id, sha256: found.sha256, error: errorMessage(err) });
    });
    this.deps.log.info('package deleted', { id, name: found.name, user });
    return found;
  }

  /** valid, or expired (its certificate or its own expiry passed since upload), or missing (file gone). */
  static displayState(p: StoredPackage, now = new Date()): DisplayState {
    if (p.state === 'missing') return 'missing';
    const expired = (p.expires !== null && Date.parse(p.expires) <= now.getTime()) || Date.parse(p.signerNotAfter) <= now.getTime();
    return expired ? 'expired' : 'valid';
  }

  /**
   * At start: drop half-stored packages, orphan files and stale uploads; flag rows whose file
   * vanished. In a store other masters share (a bucket, a shared folder), a file no row of this
   * database names may be another master's, stored a moment ago and about to become valid: only
   * files older than SHARED_SAFE_AGE_MS are removed there. A store of this master's own (the
   * default DATA/packages, under the data folder's lock) has no other writer: all are removed.
   */
  async recover(now = Date.now()): Promise<{ tempFiles: number; halfStored: number; orphanFiles: number; orphansKept: number; missing: number }> {
    const { packages, store, log } = this.deps;
    const tempFiles = await store.clearTemp();
    const halfStored = await this.sweepHalfStored(now);
    const stored = new Map((await store.list()).map((e) => [e.sha256, e]));
    const safeBefore = now - SHARED_SAFE_AGE_MS;
    const removable = (sha256: string) => !store.shared || (stored.get(sha256)?.modifiedAt.getTime() ?? 0) < safeBefore;
    const known = await packages.allSha256();
    const orphans = [...stored.keys()].filter((sha) => !known.has(sha));
    const young = orphans.filter((sha) => !removable(sha));
    for (const sha of orphans) {
      if (!removable(sha)) continue;
      await store.remove(sha);
      stored.delete(sha);
    }
    if (young.length > 0) log.info('files no package names kept in the shared store: younger than an hour, another master may be storing them', { count: young.length, store: store.description });
    let missing = 0;
    for (const p of await packages.list()) {
      const present = stored.has(p.sha256);
      if (!present && p.state === 'valid') {
        await packages.setState(p.id, 'missing');
        log.error('package file missing from the store', { id: p.id, name: p.name, sha256: p.sha256, store: store.description });
        missing++;
      } else if (present && p.state === 'missing') {
        await packages.setState(p.id, 'valid');
      }
      if (present && p.manifestSha256 === '') {
        const members = await store.withLocalCopy(p.sha256, readPackageArchive).catch(() => null);
        if (members) await packages.setManifestSha256(p.id, members.manifestSha256);
      }
    }
    const orphanFiles = orphans.length - young.length;
    const summary = { tempFiles, halfStored, orphanFiles, orphansKept: young.length, missing };
    if (tempFiles + halfStored + orphanFiles + missing > 0) log.warn('store recovered after an unclean stop', summary);
    return summary;
  }

  /**
   * Drops package rows left 'storing' (and their file) by a master that died between verifying a
   * package and making it valid. Alone, every such row at start is one. A store shared with other
   * masters holds their packages in that state too, for seconds: only the rows of a master no
   * longer alive (silent for HALF_STORED_GRACE_MS), or 'storing' for an hour, are dropped; the
   * leader looks every half minute, so a dead master's upload frees its name within a minute.
   */
  async sweepHalfStored(now = Date.now()): Promise<number> {
    const { packages, store, log } = this.deps;
    const alive = store.shared ? await this.deps.liveMasters?.() ?? null : null;
    let swept = 0;
    for (const p of await packages.halfStored()) {
      const age = now - (Date.parse(p.uploadedAt) || 0);
      const left = !store.shared
        || age > SHARED_SAFE_AGE_MS
        || (alive !== null && p.storedBy !== null && p.storedBy !== this.deps.masterId && !alive.has(p.storedBy) && age > HALF_STORED_GRACE_MS);
      if (!left) continue;
      await packages.delete(p.id);
      // A shared store's file goes with the orphans, once old enough (another database may name it).
      if (!store.shared) await store.remove(p.sha256);
      log.warn('package left half-stored by a master that stopped: removed', { id: p.id, sha256: p.sha256, storedBy: p.storedBy });
      swept++;
    }
    return swept;
  }
}
