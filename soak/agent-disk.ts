import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import path from 'node:path';
import { compareVersions, isValidVersion } from '../lib/version.js';
import { INITIAL_VERSION } from './fleet.js';

/** The version an agent runs, as its disk says: DATA/current → releases/<version>, or the initial one. */
export async function installedVersion(dataDir: string): Promise<string> {
  const target = await readlink(path.join(dataDir, 'current')).catch(() => null);
  return target ? path.basename(target) : INITIAL_VERSION;
}

/**
 * What is left in DATA/staging, in words: the staged packages by version (from their .json
 * records), and any other file (a partial download) by name and size.
 */
export async function stagingSummary(dataDir: string): Promise<string | null> {
  const dir = path.join(dataDir, 'staging');
  const names = await readdir(dir).catch(() => [] as string[]);
  if (names.length === 0) return null;
  const staged: { version: string; note: string }[] = [];
  const others: string[] = [];
  for (const name of names.sort()) {
    const sha = /^([0-9a-f]{64})\.(pkg|json)$/.exec(name);
    if (sha?.[2] === 'json') {
      const found = /"version":\s*"([^"]+)"/.exec(await readFile(path.join(dir, name), 'utf8').catch(() => ''))?.[1] ?? '';
      const version = isValidVersion(found) ? found : '0';
      staged.push({ version, note: names.includes(`${sha[1]}.pkg`) ? '' : ' (record without its .pkg)' });
    } else if (!(sha?.[2] === 'pkg' && names.includes(`${sha[1]}.json`))) {
      const size = (await stat(path.join(dir, name)).catch(() => null))?.size ?? 0;
      others.push(`${name.replace(/^([0-9a-f]{12})[0-9a-f]{52}/, '$1…')} (${size} bytes)`);
    }
  }
  return [staged.length ? `${staged.length} staged package(s) ${staged.sort((a, b) => compareVersions(a.version, b.version)).map((p) => p.version + p.note).join(', ')}` : '', others.length ? `other files: ${others.join(', ')}` : ''].filter(Boolean).join('; ');
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
