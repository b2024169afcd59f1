import { execFile } from 'node:child_process';
import { access, mkdir, open } from 'node:fs/promises';
import path from 'node:path';

/**
 * Small real file systems for disk faults: a tmpfs to fill, an ext4 image on a loop device that
 * the kernel turns read-only under a running process. Each returns why it cannot, for t.skip.
 */

/** Runs a program and never throws: its exit code and what it printed. */
export function tryRun(command: string, args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(command, args, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, output: `${stdout}${stderr}`.trim() });
    });
  });
}

function needsRoot(): string | null {
  return process.getuid?.() === 0 ? null : 'needs root to mount a file system';
}

/** Mounts a tmpfs of `size` (e.g. "8m") at dir; a reason when it cannot. */
export async function mountTmpfs(dir: string, size: string): Promise<string | null> {
  const root = needsRoot();
  if (root) return root;
  await mkdir(dir, { recursive: true });
  const mounted = await tryRun('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  return mounted.code === 0 ? null : `cannot mount a tmpfs: ${mounted.output}`;
}

/**
 * An ext4 file system of `sizeMiB` in an image file, loop-mounted at dir with errors=remount-ro
 * (as most distributions mount their disks), and the sysfs file that makes the kernel record a
 * file system error, which turns it read-only under whoever has it open.
 */
export async function mountExt4(image: string, dir: string, sizeMiB: number): Promise<{ errorTrigger: string } | string> {
  const root = needsRoot();
  if (root) return root;
  const mkfs = await tryRun('mkfs.ext4', ['-q', '-F', '-m', '0', image, `${sizeMiB}M`]);
  if (mkfs.code !== 0) return `cannot make an ext4 image (Debian package e2fsprogs): ${mkfs.output}`;
  await mkdir(dir, { recursive: true });
  const mounted = await tryRun('mount', ['-o', 'loop,errors=remount-ro', image, dir]);
  if (mounted.code !== 0) return `cannot loop-mount an ext4 image: ${mounted.output}`;
  const device = path.basename((await tryRun('findmnt', ['-n', '-o', 'SOURCE', dir])).output);
  const errorTrigger = `/sys/fs/ext4/${device}/trigger_fs_error`;
  if (!(await access(errorTrigger).then(() => true, () => false))) {
    await unmount(dir);
    return `this kernel has no ${errorTrigger} to turn the file system read-only`;
  }
  return { errorTrigger };
}

export async function unmount(dir: string): Promise<void> {
  const result = await tryRun('umount', [dir]);
  if (result.code !== 0) throw new Error(`umount ${dir}: ${result.output}`);
}

/** Writes zeros to dir/name until the disk is full (ENOSPC); returns the file's path. */
export async function fillDisk(dir: string, name = 'filler.bin'): Promise<string> {
  const file = path.join(dir, name);
  const handle = await open(file, 'w');
  try {
    for (const size of [1024 * 1024, 4096]) {
      const chunk = Buffer.alloc(size);
      for (;;) {
        const written = await handle.write(chunk).then((r) => r.bytesWritten, (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOSPC') return 0;
          throw err;
        });
        if (written < size) break;
      }
    }
  } finally {
    await handle.close().catch(() => undefined);
  }
  return file;
}
