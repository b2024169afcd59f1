import { readFile, writeFile } from 'node:fs/promises';

/** Flips one byte inside the payload.tar.gz member of a plain-tar package (not in tar padding). */
export async function flipPayloadByte(file: string): Promise<void> {
  const bytes = await readFile(file);
  for (let header = 0; header + 512 <= bytes.length; header += 512) {
    const name = bytes.subarray(header, header + 100).toString('latin1').replace(/\0.*$/s, '');
    if (name === 'payload.tar.gz' || name === './payload.tar.gz') {
      const at = header + 512 + 100;
      bytes[at] = (bytes[at] ?? 0) ^ 0xff;
      await writeFile(file, bytes);
      return;
    }
  }
  throw new Error(`no payload.tar.gz member in ${file}`);
}
