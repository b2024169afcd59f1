import { pipeline } from 'node:stream/promises';
import type { Request, Response } from 'express';
import { NotFoundError } from '../../lib/errors.js';
import type { PackageSource } from '../package-store.js';
import { watchSend } from './timeouts.js';

/**
 * Sends a package from the store (a file, or an object streamed from a bucket), answering a single
 * byte range with 206 so a cut download can resume. Multiple or malformed ranges get the whole
 * file (200), which the agent handles; an unsatisfiable one gets 416. A client that takes nothing
 * for the send idle timeout is cut and the file (or the bucket's stream) closed.
 */
export async function sendPackage(req: Request, res: Response, source: PackageSource | null): Promise<void> {
  if (!source) throw new NotFoundError('The package file is missing from the master\'s store');
  const size = source.size;
  const ranges = req.headers.range ? req.range(size, { combine: true }) : undefined;
  if (ranges === -1) {
    res.status(416).set('Content-Range', `bytes */${size}`).json({ error: `The range asked for is outside the package (${size} bytes)` });
    return;
  }
  const single = Array.isArray(ranges) && ranges.length === 1 ? ranges[0] : undefined;
  const start = single ? single.start : 0;
  const end = single ? single.end : size - 1;
  // Opened before any header is set: a bucket that fails here gets a plain error answer.
  const stream = req.method === 'HEAD' || size === 0 ? null : await source.open(start, end);
  res.set({ 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream', 'Cache-Control': 'no-store' });
  if (single) res.status(206).set('Content-Range', `bytes ${start}-${end}/${size}`);
  else res.status(200);
  res.set('Content-Length', String(size === 0 ? 0 : end - start + 1));
  if (!stream) {
    res.end();
    return;
  }
  // The stream reads a chunk only when the socket took the previous ones: each one is progress.
  // (So is a drain: with a folder's 1 MiB chunks, a slow client needs at least 1 MiB per timeout.)
  const watch = watchSend(req, res);
  stream.on('data', (chunk: string | Buffer) => watch.progress(chunk.length));
  res.on('drain', () => watch.progress(0));
  try {
    await pipeline(stream, res);
  } catch (err) {
    // An agent that hangs up mid-download resumes later with a Range; nothing to report here.
    if (!res.destroyed && !res.writableEnded && !req.destroyed) throw err;
  } finally {
    watch.stop();
  }
}
