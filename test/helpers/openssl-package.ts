import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { must, run } from './run.js';
import type { Publisher } from './test-pki.js';

/**
 * Packages made with tar, sha256sum and the openssl CLI alone, the way any publisher can, as
 * ../shared/tools/make-package.sh does. Split into stage → (tamper) → pack so tests can break
 * each part on purpose.
 */
export interface StageOptions {
  publisher: Publisher;
  /** A folder to tar as the payload, or a ready payload.tar.gz file. */
  payloadDir?: string;
  payloadFile?: string;
  product?: string;
  version?: string;
  expires?: string;
  minVersion?: string;
  /** Edits the manifest object before it is signed. */
  editManifest?: (manifest: Record<string, unknown>) => Record<string, unknown>;
}

export async function stagePackage(stage: string, options: StageOptions): Promise<string> {
  await mkdir(stage, { recursive: true });
  const payload = path.join(stage, 'payload.tar.gz');
  if (options.payloadFile) await copyFile(options.payloadFile, payload);
  else await must('tar', ['-C', options.payloadDir ?? '.', '-czf', payload, '--owner=0', '--group=0', '.']);
  const size = (await stat(payload)).size;
  const sha256 = (await must('sha256sum', [payload])).split(' ')[0];
  let manifest: Record<string, unknown> = {
    format: 1,
    product: options.product ?? 'watchdoc',
    version: options.version ?? '6.1.2',
    created: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    ...(options.expires ? { expires: options.expires } : {}),
    ...(options.minVersion ? { minVersion: options.minVersion } : {}),
    payload: { path: 'payload.tar.gz', size, sha256 },
  };
  if (options.editManifest) manifest = options.editManifest(manifest);
  await writeFile(path.join(stage, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  await signStage(stage, options.publisher.key);
  await copyFile(options.publisher.chain, path.join(stage, 'signer.pem'));
  return stage;
}

/** Signs stage/manifest.json as a publisher does: openssl dgst -sha256 -sign. */
export async function signStage(stage: string, key: string, extra: string[] = []): Promise<void> {
  await must('openssl', ['dgst', '-sha256', ...extra, '-sign', key, '-out', path.join(stage, 'manifest.sig'), path.join(stage, 'manifest.json')]);
}

export const MEMBERS = ['manifest.json', 'manifest.sig', 'signer.pem', 'payload.tar.gz'];

/** tar (optionally gzipped) of the staged members, with GNU tar. */
export async function packStage(stage: string, out: string, options: { gzip?: boolean; members?: string[]; tarArgs?: string[] } = {}): Promise<string> {
  const flags = options.gzip ? '-czf' : '-cf';
  await must('tar', ['-C', stage, ...(options.tarArgs ?? []), flags, out, '--owner=0', '--group=0', ...(options.members ?? MEMBERS)]);
  return out;
}

export async function makePackage(work: string, name: string, options: StageOptions & { gzip?: boolean }): Promise<string> {
  const stage = await stagePackage(path.join(work, `${name}.stage`), options);
  return packStage(stage, path.join(work, `${name}.pkg`), { gzip: options.gzip });
}

export interface CraftEntry {
  name: string;
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'chardev' | 'fifo' | 'volume';
  content?: string;
  linkname?: string;
  mode?: number;
  /** The size the header claims, whatever follows it (the content's length by default). */
  size?: number;
  /** pax records written before the entry. */
  pax?: Record<string, string>;
}

const CRAFT = `
import io, json, sys, tarfile
spec = json.load(sys.stdin)
types = {'file': tarfile.REGTYPE, 'dir': tarfile.DIRTYPE, 'symlink': tarfile.SYMTYPE,
         'hardlink': tarfile.LNKTYPE, 'chardev': tarfile.CHRTYPE, 'fifo': tarfile.FIFOTYPE, 'volume': b'V'}
with tarfile.open(spec['out'], 'w:gz' if spec['gzip'] else 'w', format=tarfile.PAX_FORMAT) as tar:
    for e in spec['entries']:
        info = tarfile.TarInfo(e['name'])
        info.type = types[e.get('type', 'file')]
        info.mode = e.get('mode', 0o644)
        info.linkname = e.get('linkname', '')
        data = e.get('content', '').encode()
        info.size = e.get('size', len(data) if info.type == tarfile.REGTYPE else 0)
        info.pax_headers = e.get('pax', {})
        tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
`;

/** Writes any tar python's tarfile can express, including what GNU tar refuses to create. */
export async function craftTar(out: string, entries: CraftEntry[], gzip = false): Promise<string> {
  const result = await run('python3', ['-c', CRAFT], { input: JSON.stringify({ out, entries, gzip }) });
  if (result.code !== 0) throw new Error(`python3 tarfile failed: ${result.stderr}`);
  return out;
}

export async function readJson(file: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
}
