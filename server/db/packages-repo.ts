import type { Manifest } from '../../lib/manifest.js';
import type { CertificateSummary } from '../../lib/package-verifier.js';
import type { PackageState, StoredPackage } from '../domain.js';
import type { Queryable } from './database.js';

interface PackageRow {
  id: number;
  name: string;
  product: string;
  version: string;
  size: number;
  sha256: string;
  payload_size: number;
  payload_sha256: string;
  manifest_sha256: string;
  manifest_json: string;
  signer_subject: string;
  chain_json: string;
  signer_not_after: string;
  expires: string | null;
  min_version: string | null;
  description: string | null;
  state: PackageState;
  uploaded_by: string;
  uploaded_at: string;
}

function toPackage(row: PackageRow): StoredPackage {
  return {
    id: row.id,
    name: row.name,
    product: row.product,
    version: row.version,
    size: row.size,
    sha256: row.sha256,
    payload: { size: row.payload_size, sha256: row.payload_sha256 },
    manifestSha256: row.manifest_sha256,
    manifest: JSON.parse(row.manifest_json) as Manifest,
    signer: row.signer_subject,
    chain: JSON.parse(row.chain_json) as CertificateSummary[],
    signerNotAfter: row.signer_not_after,
    expires: row.expires,
    minVersion: row.min_version,
    description: row.description,
    state: row.state,
    uploadedBy: row.uploaded_by,
    uploadedAt: row.uploaded_at,
  };
}

export type NewPackage = Omit<StoredPackage, 'id'>;

export class PackagesRepo {
  constructor(private readonly db: Queryable) {}

  /** `storedBy`: the master storing it (several masters: a row left 'storing' by a dead one is swept). */
  async insert(p: NewPackage, storedBy: string | null = null): Promise<number> {
    const row = await this.db.get<{ id: number }>(
      `INSERT INTO packages (name, product, version, size, sha256, payload_size, payload_sha256, manifest_sha256, manifest_json,
         signer_subject, chain_json, signer_not_after, expires, min_version, description, state, uploaded_by, uploaded_at, stored_by)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
      [p.name, p.product, p.version, p.size, p.sha256, p.payload.size, p.payload.sha256, p.manifestSha256, JSON.stringify(p.manifest),
        p.signer, JSON.stringify(p.chain), p.signerNotAfter, p.expires, p.minVersion, p.description, p.state, p.uploadedBy, p.uploadedAt, storedBy],
    );
    return (row as { id: number }).id;
  }

  /** False when the row is gone (several masters: swept as abandoned while this one was stalled). */
  async setState(id: number, state: PackageState): Promise<boolean> {
    return (await this.db.run('UPDATE packages SET state = ? WHERE id = ?', [state, id])).changes > 0;
  }

  /** For packages stored before manifests had digests: the package and its commands get it. */
  async setManifestSha256(id: number, digest: string): Promise<void> {
    await this.db.run('UPDATE packages SET manifest_sha256 = ? WHERE id = ?', [digest, id]);
    await this.db.run("UPDATE commands SET manifest_sha256 = ? WHERE package_id = ? AND manifest_sha256 = ''", [digest, id]);
  }

  async findById(id: number): Promise<StoredPackage | null> {
    const row = await this.db.get<PackageRow>('SELECT * FROM packages WHERE id = ?', [id]);
    return row ? toPackage(row) : null;
  }

  async findByName(name: string): Promise<StoredPackage | null> {
    const row = await this.db.get<PackageRow>('SELECT * FROM packages WHERE name = ?', [name]);
    return row ? toPackage(row) : null;
  }

  async findBySha256(sha256: string): Promise<StoredPackage | null> {
    const row = await this.db.get<PackageRow>('SELECT * FROM packages WHERE sha256 = ?', [sha256]);
    return row ? toPackage(row) : null;
  }

  /** Newest first; rows still being stored are not shown. */
  async list(): Promise<StoredPackage[]> {
    const rows = await this.db.all<PackageRow>("SELECT * FROM packages WHERE state != 'storing' ORDER BY uploaded_at DESC, id DESC");
    return rows.map(toPackage);
  }

  /** Rows between their verification and 'valid' (or left so by a master that died meanwhile). */
  async halfStored(): Promise<{ id: number; sha256: string; uploadedAt: string; storedBy: string | null }[]> {
    const rows = await this.db.all<{ id: number; sha256: string; uploaded_at: string; stored_by: string | null }>("SELECT id, sha256, uploaded_at, stored_by FROM packages WHERE state = 'storing'");
    return rows.map((r) => ({ id: r.id, sha256: r.sha256, uploadedAt: r.uploaded_at, storedBy: r.stored_by }));
  }

  async listByState(state: PackageState): Promise<StoredPackage[]> {
    return (await this.db.all<PackageRow>('SELECT * FROM packages WHERE state = ?', [state])).map(toPackage);
  }

  /** Which of these digests the master still has a package for (any state). */
  async knownSha256(digests: string[]): Promise<Set<string>> {
    if (digests.length === 0) return new Set();
    const rows = await this.db.all<{ sha256: string }>(`SELECT sha256 FROM packages WHERE sha256 IN (${digests.map(() => '?').join(', ')})`, digests);
    return new Set(rows.map((r) => r.sha256));
  }

  async allSha256(): Promise<Set<string>> {
    return new Set((await this.db.all<{ sha256: string }>('SELECT sha256 FROM packages')).map((r) => r.sha256));
  }

  async delete(id: number): Promise<boolean> {
    return (await this.db.run('DELETE FROM packages WHERE id = ?', [id])).changes > 0;
  }
}
