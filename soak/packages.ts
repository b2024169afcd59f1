import { rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { makeRelease } from '../test/helpers/releases.js';
import type { Publisher } from '../test/helpers/test-pki.js';

/** small: a few KiB; big: enough that downloads are in flight when faults hit; unhealthy: its health hook fails. */
export type PackageKind = 'small' | 'big' | 'unhealthy';

export const BIG_PACKAGE_BYTES = 32 * 1024 * 1024;

export interface SoakPackage {
  file: string;
  version: string;
  kind: PackageKind;
}

/**
 * A signed release of the soak's product, made with tar and openssl like the tests' releases. Its
 * apply hook takes a moment, so agent kills land in hooks too; an unhealthy one fails its health
 * check, so the agent must roll back.
 */
export async function buildPackage(work: string, publisher: Publisher, round: number, kind: PackageKind): Promise<SoakPackage> {
  const version = `6.${round}.0`;
  const made = await makeRelease(work, publisher, version, {
    apply: 'sleep 1',
    health: kind === 'unhealthy' ? 'echo "soak: this release is unhealthy on purpose"; exit 1' : 'exit 0',
    padding: kind === 'big' ? BIG_PACKAGE_BYTES : 1024,
  });
  const file = path.join(work, `watchdoc-${version}-${kind}.pkg`);
  await rename(made, file);
  // The staging folder and the payload folder makeRelease left: only the package is needed.
  const base = path.basename(made, '.pkg');
  await Promise.all([rm(path.join(work, base), { recursive: true, force: true }), rm(path.join(work, `${base}.stage`), { recursive: true, force: true })]);
  return { file, version, kind };
}
