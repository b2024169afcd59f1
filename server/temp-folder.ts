import { randomUUID } from 'node:crypto';
import { chmod, mkdir, open, readdir, rm } from 'node:fs/promises';
import path from 'node:path';

/** fsync(2) of a file or a folder: its data, or its entries, are on the disk when this resolves. */
export async function syncPath(file: string): Promise<void> {
  const handle = await open(file, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Owner-only folders, whatever mode they had (mkdir does not change an existing folder). */
export async function ownerOnlyFolders(dirs: string[]): Promise<void> {
  for (const dir of dirs) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
  }
}

/**
 * DATA/tmp: uploads in progress, on the master's own disk whatever the store. The verifier reads
 * a local file, and an upload cut short never reaches the store.
 */
export class TempFolder {
  constructor(readonly dir: string) {}

  newPath(prefix = 'upload'): string {
    return path.join(this.dir, `${prefix}-${randomUUID()}.part`);
  }

  async discard(file: string): Promise<void> {
    await rm(file, { force: true });
  }

  /** Uploads cut short by a crash or a disconnect leave files here; none survives a restart. */
  async clear(): Promise<number> {
    const files = await readdir(this.dir);
    await Promise.all(files.map((f) => rm(path.join(this.dir, f), { force: true, recursive: true })));
    return files.length;
  }

  list(): Promise<string[]> {
    return readdir(this.dir);
  }
}
