import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import path from 'node:path';
import { INITIAL_VERSION } from './fleet.js';

/** The version an agent runs, as its disk says: DATA/current → releases/<version>, or the initial one. */
export async function installedVersion(dataDir: string): Promise<string> {
  const target = await readlink(path.join(dataDir, 'current')).catch(() => null);
  return target ? path.basename(target) : INITIAL_VERSION;
}

/** Every file under DATA/staging ("name (N bytes)"). */
export async function stagingFiles(dataDir: string): Promise<string[]> {
  const dir = path.join(dataDir, 'staging');
  const names = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  const files: string[] = [];
  for (const name of names) {
    const info = await stat(path.join(dir, name)).catch(() => null);
    if (info && !info.isDirectory()) files.push(`${name} (${info.size} bytes)`);
  }
  return files.sort();
}

/** Command records the agent has not finished or not reported yet (DATA/commands/<id>.json). */
export async function openRecords(dataDir: string): Promise<string[]> {
  const dir = path.join(dataDir, 'commands');
  const open: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const text = await readFile(path.join(dir, name), 'utf8').catch(() => '');
    const record = parseRecord(text);
    if (record && (record.result.state === 'running' || !record.reported)) open.push(`${name}: ${record.result.state}${record.reported ? '' : ', not reported'}`);
  }
  return open;
}

interface RecordShape {
  result: { state: string };
  reported: boolean;
}

function parseRecord(text: string): RecordShape | null {
  try {
    const value = JSON.parse(text) as Partial<RecordShape>;
    return value.result && typeof value.result.state === 'string' && typeof value.reported === 'boolean' ? (value as RecordShape) : null;
  } catch {
    return null;
  }
}
