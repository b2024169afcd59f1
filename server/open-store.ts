import type { MasterConfig } from './config.js';
import { FolderStore } from './folder-store.js';
import type { PackageStore } from './package-store.js';

/** The bucket's connections outlive a slow agent's silence by this much (see S3StoreOptions). */
const BUCKET_SILENCE_MARGIN_MS = 30_000;

/**
 * The store --store names, not yet initialised. The AWS SDK is loaded only for a bucket: a master
 * on a folder does not pay for it at start.
 */
export async function openPackageStore(config: Readonly<MasterConfig>): Promise<PackageStore> {
  const setting = config.store;
  if (setting.kind === 'folder') return new FolderStore(config.dataDir, { packagesDir: setting.path, shared: setting.shared });
  // The SDK warns, in seven lines on stderr at every start, that its releases after January 2027
  // need Node 22; package-lock.json pins the one tested here. Set the variable to false to see it.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const { S3Store } = await import('./s3-store.js');
  return new S3Store(config.dataDir, setting, { socketTimeoutMs: config.sendIdleTimeoutMs + BUCKET_SILENCE_MARGIN_MS });
}
