import { must } from './run.js';

// Incompressible bytes in a tar.gz at gzip level 0, so payload.tar.gz really is that large.
const MAKE_PAYLOAD = `
import os, sys, tarfile
out, size = sys.argv[1], int(sys.argv[2])
class Random:
    def __init__(self, n): self.left = n
    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)
with tarfile.open(out, 'w:gz', compresslevel=0) as tar:
    info = tarfile.TarInfo('data/blob.bin'); info.size = size
    tar.addfile(info, Random(size))
`;

/** Writes a payload.tar.gz holding `size` random bytes (python's tarfile, streaming). */
export async function makeRandomPayload(out: string, size: number): Promise<string> {
  await must('python3', ['-c', MAKE_PAYLOAD, out, String(size)]);
  return out;
}

// Zeros at gzip level 9: a payload about a thousand times smaller than what it unpacks to.
const MAKE_ZEROS = `
import sys, tarfile
out, size = sys.argv[1], int(sys.argv[2])
class Zeros:
    def __init__(self, n): self.left = n
    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)
with tarfile.open(out, 'w:gz', compresslevel=9) as tar:
    info = tarfile.TarInfo('data/zeros.bin'); info.size = size
    tar.addfile(info, Zeros(size))
`;

/** Writes a payload.tar.gz holding one file of `size` zero bytes (python's tarfile, streaming). */
export async function makeZerosPayload(out: string, size: number): Promise<string> {
  await must('python3', ['-c', MAKE_ZEROS, out, String(size)]);
  return out;
}
