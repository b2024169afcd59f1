import { compareVersions } from '../../lib/version.js';
import type { StoredPackage } from '../domain.js';
import type { ProductInfo } from './settings-service.js';

/**
 * Why a package cannot be propagated from this master, or null. The master is updated by hand
 * first, so the domain never runs a version the master does not.
 */
export function propagationBlocker(pkg: Pick<StoredPackage, 'product' | 'version'>, master: ProductInfo): string | null {
  if (pkg.product !== master.product) return `This package is for ${pkg.product}; the master runs ${master.product}`;
  if (compareVersions(pkg.version, master.version) > 0) return `Update the master to ${pkg.version} first (it runs ${master.version})`;
  return null;
}
