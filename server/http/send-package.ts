import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { Request, Response } from 'express';
import { NotFoundError } from '../../lib/errors.js';
import { watchSend } from './timeouts.js';

/**
 * Node cannot sendfile(2) to a socket, so every byte of a package is copied through this process
 * for every agent. 1 MiB reads (express's sendFile reads 64 KiB) cut that per-chunk cost on both
 * ends: with 20 downloads at once on two cores, the clients used ~40 % more CPU receiving from
 * sendFile than from 1 MiB reads, and took ~50 % longer (docs/PERFORMANCE.md).
 */
const READ_SIZE = 1024 * 1024;

/**
 * Sends a package file, answering a single byte range with 206 so a cut download can resume.
 * Multiple or malformed ranges get the whole file (200), which the agent handles; an unsatisfiable
 * one gets 416. A client that takes nothing for the send idle timeout is cut and the file closed.
 */
export async function sendPackageFile(req: Request, res: Response, file: string): Promise<void> {
  const info = await stat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new NotFoundError('The package file is missing from the master\'s store');
    throw err;
  });
  const size = info.size;
  const ranges = req.headers.range ? req.range(size, { combine: true }) : undefined;
  if (ranges === -1) {
    res.status(416).set('Content-Range', `bytes */${size}`).json({ error: `The range asked for is outside the package (${size} bytes)` });
    return;
  }
  let start = 0;
  let end = size - 1;
  res.set({ 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream', 'Cache-Control': 'no-store' });
  if (Array.isArray(ranges) && ranges.length === 1 && ranges[0]) {
    ({ start, end } = ranges[0]);
    res.status(206).set('Content-Range', `bytes ${start}-${end}/${size}`);
  } else {
    res.status(200);
  }
  res.set('Content-Length', String(size === 0 ? 0 : end - start + 1));
  if (req.method === 'HEAD' || size === 0) {
    res.end();
    return;
  }
  const source = createReadStream(file, { start, end, highWaterMark: READ_SIZE });
  // The stream reads a chunk only when the socket took the previous ones: each one is progress.
  // (So is a drain: with 1 MiB chunks, a slow client needs at least 1 MiB per timeout.)
  const watch = watchSend(req, res);
  source.on('data', (chunk: string | Buffer) => watch.progress(chunk.length));
  res.on('drain', () => watch.progress(0));
  try {
    await pipeline(source, res);
  } catch (err) {
    // An agent that hangs up mid-download resumes later with a Range; nothing to report here.
    if (!res.destroyed && !res.writableEnded && !req.destroyed) throw err;
  } finally {
    watch.stop();
  }
}
