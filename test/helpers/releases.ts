import { mkdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { makePackage } from './openssl-package.js';
import type { Publisher } from './test-pki.js';

export interface ReleaseOptions {
  apply?: string;
  health?: string;
  /** Random bytes added to the payload, to make the download large. */
  padding?: number;
  product?: string;
  minVersion?: string;
}

/**
 * A signed release of the test product, built with openssl. Its hooks append to DATA/hook-log.txt
 * (the release directory is DATA/releases/<version>) so tests see what ran, with what environment.
 */
export async function makeRelease(work: string, publisher: Publisher, version: string, options: ReleaseOptions = {}): Promise<string> {
  const dir = path.join(work, `release-${version}-${Math.random().toString(36).slice(2, 8)}`);
  await mkdir(path.join(dir, 'hooks'), { recursive: true });
  await writeFile(path.join(dir, 'watchdoc.conf'), `version=${version}\n`);
  const log = 'echo "$0 product=$UPDATE_PRODUCT version=$UPDATE_VERSION previous=$UPDATE_PREVIOUS_VERSION dir=$UPDATE_RELEASE_DIR" >> ../../hook-log.txt';
  await writeFile(path.join(dir, 'hooks', 'apply'), `#!/bin/sh\n${log}\n${options.apply ?? 'exit 0'}\n`, { mode: 0o755 });
  await writeFile(path.join(dir, 'hooks', 'health'), `#!/bin/sh\n${log}\n${options.health ?? 'exit 0'}\n`, { mode: 0o755 });
  if (options.padding) await writeFile(path.join(dir, 'padding.bin'), randomBytes(options.padding));
  return makePackage(work, path.basename(dir), { publisher, payloadDir: dir, version, product: options.product, minVersion: options.minVersion });
}
