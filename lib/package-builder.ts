import { createPrivateKey, createPublicKey, sign, type KeyObject } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { create as createTar, type WriteEntry } from 'tar';
import { OID_CODE_SIGNING, type CertificateInfo } from './certificate.js';
import { parseSignerPem } from './cert-chain.js';
import { ValidationError, errorMessage, PackageRejectedError } from './errors.js';
import { hashingTap } from './hashing-tap.js';
import { PAYLOAD_MEMBER, parseManifest, serializeManifest, type Manifest } from './manifest.js';

export interface BuildOptions {
  payloadDir: string;
  product: string;
  version: string;
  keyFile: string;
  chainFile: string;
  outFile: string;
  expires?: string;
  minVersion?: string;
  description?: string;
  /** gzip the container too (the payload is always gzipped). */
  gzip?: boolean;
  keyPassphrase?: string;
  now?: Date;
}

export interface BuildResult {
  file: string;
  manifest: Manifest;
  /** Things a careful publisher should know; the package is built anyway. */
  warnings: string[];
}

async function loadKey(file: string, passphrase: string | undefined): Promise<KeyObject> {
  let pem: Buffer;
  try {
    pem = await readFile(file);
  } catch (err) {
    throw new ValidationError(`cannot read the signing key ${file}: ${errorMessage(err)}`);
  }
  try {
    return createPrivateKey(passphrase === undefined ? pem : { key: pem, passphrase });
  } catch (err) {
    throw new ValidationError(`${file} is not a usable private key (${errorMessage(err)}); an encrypted key needs PROPAGATOR_KEY_PASSPHRASE`);
  }
}

async function loadChain(file: string): Promise<CertificateInfo[]> {
  let pem: Buffer;
  try {
    pem = await readFile(file);
  } catch (err) {
    throw new ValidationError(`cannot read the certificate chain ${file}: ${errorMessage(err)}`);
  }
  try {
    return parseSignerPem(pem);
  } catch (err) {
    throw new ValidationError(`${file}: ${err instanceof PackageRejectedError ? err.reason : errorMessage(err)}`);
  }
}

function spki(key: KeyObject): Buffer {
  return key.export({ type: 'spki', format: 'der' });
}

function chainWarnings(signer: CertificateInfo, now: Date): string[] {
  const warnings: string[] = [];
  if (now > signer.notAfter) warnings.push(`the signer certificate expired on ${signer.notAfter.toISOString()}: verifiers will refuse this package`);
  if (now < signer.notBefore) warnings.push(`the signer certificate is not valid before ${signer.notBefore.toISOString()}`);
  if (!signer.extKeyUsage?.includes(OID_CODE_SIGNING)) warnings.push('the signer certificate has no codeSigning extended key usage: verifiers will refuse this package');
  return warnings;
}

/**
 * Writes the payload tarball while hashing it, so it is read from disk once, and sums what the
 * regular files hold: the unpackedSize agents check free disk and the unpack limit against.
 */
async function writePayload(payloadDir: string, dest: string): Promise<{ size: number; sha256: string; unpackedSize: number }> {
  const tap = hashingTap();
  let unpackedSize = 0;
  const onWriteEntry = (entry: WriteEntry) => {
    if (entry.type === 'File') unpackedSize += entry.stat?.size ?? 0;
  };
  await pipeline(createTar({ cwd: payloadDir, gzip: true, portable: true, onWriteEntry }, ['.']), tap.stream, createWriteStream(dest));
  return { ...tap.result(), unpackedSize };
}

const withoutMillis = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

/**
 * Builds a format 1 package exactly as ../shared/tools/make-package.sh does with openssl, so the
 * two are interchangeable. The output appears atomically: a reader never sees a half-written file.
 */
export async function buildPackage(options: BuildOptions): Promise<BuildResult> {
  const now = options.now ?? new Date();
  const info = await stat(options.payloadDir).catch(() => null);
  if (!info?.isDirectory()) throw new ValidationError(`payload directory ${options.payloadDir} does not exist or is not a directory`);
  const key = await loadKey(options.keyFile, options.keyPassphrase);
  const chain = await loadChain(options.chainFile);
  const signer = chain[0] as CertificateInfo;
  if (!spki(createPublicKey(key)).equals(spki(signer.x509.publicKey))) {
    throw new ValidationError(`the key ${options.keyFile} does not belong to the first certificate of ${options.chainFile} ("${signer.subject}")`);
  }
  // Validate the fields with the verifier's own schema before doing any work.
  const draft: Manifest = {
    format: 1,
    product: options.product,
    version: options.version,
    created: withoutMillis(now),
    ...(options.expires !== undefined ? { expires: options.expires } : {}),
    ...(options.minVersion !== undefined ? { minVersion: options.minVersion } : {}),
    ...(options.description !== undefined ? { description: options.description } : {}),
    unpackedSize: 0,
    payload: { path: PAYLOAD_MEMBER, size: 0, sha256: '0'.repeat(64) },
  };
  try {
    parseManifest(serializeManifest(draft));
  } catch (err) {
    throw new ValidationError(err instanceof PackageRejectedError ? err.reason.replace('manifest field', 'field') : errorMessage(err));
  }
  if (options.expires !== undefined && Date.parse(options.expires) <= now.getTime()) {
    throw new ValidationError(`--expires ${options.expires} is already in the past`);
  }

  const outFile = path.resolve(options.outFile);
  const outDir = await stat(path.dirname(outFile)).catch(() => null);
  if (!outDir?.isDirectory()) throw new ValidationError(`output folder ${path.dirname(outFile)} does not exist`);
  const work = await mkdtemp(path.join(path.dirname(outFile), `.${path.basename(outFile)}.build-`));
  try {
    const { unpackedSize, ...payload } = await writePayload(options.payloadDir, path.join(work, PAYLOAD_MEMBER));
    const manifest: Manifest = { ...draft, unpackedSize, payload: { path: PAYLOAD_MEMBER, ...payload } };
    const manifestBytes = serializeManifest(manifest);
    await writeFile(path.join(work, 'manifest.json'), manifestBytes);
    // RSA: PKCS#1 v1.5; EC: DER-encoded ECDSA. Both are what `openssl dgst -sha256 -sign` writes.
    await writeFile(path.join(work, 'manifest.sig'), sign('sha256', manifestBytes, key));
    await writeFile(path.join(work, 'signer.pem'), chain.map((c) => c.x509.toString().trim()).join('\n') + '\n');
    const partial = path.join(work, 'package.partial');
    await createTar({ cwd: work, file: partial, gzip: options.gzip ?? false, portable: true },
      ['manifest.json', 'manifest.sig', 'signer.pem', PAYLOAD_MEMBER]);
    await rename(partial, outFile);
    return { file: outFile, manifest, warnings: chainWarnings(signer, now) };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
