import type { CertificateInfo } from './certificate.js';
import { parseSignerPem, signatureMatches, verifyChain } from './cert-chain.js';
import { corrupt, notSecure } from './errors.js';
import { parseManifest, type Manifest } from './manifest.js';
import { readPackageArchive, type PackageMembers } from './package-archive.js';
import type { TrustStore } from './trust-store.js';

/** What a valid package is, as the master stores it and the CLI prints it. */
export interface VerifiedPackage {
  manifest: Manifest;
  /** SHA-256 of the exact bytes of manifest.json, hex: what an announcement can name the package by. */
  manifestSha256: string;
  signer: CertificateSummary;
  chain: CertificateSummary[];
  payload: { size: number; sha256: string };
}

export interface CertificateSummary {
  subject: string;
  issuer: string;
  fingerprint: string;
  notBefore: string;
  notAfter: string;
}

export interface VerifyOptions {
  trust: TrustStore;
  /** The instant validity is judged at; tests pin it, everyone else uses the clock. */
  now?: Date;
}

function summarize(cert: CertificateInfo): CertificateSummary {
  return {
    subject: cert.subject,
    issuer: cert.issuer,
    fingerprint: cert.fingerprint,
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
  };
}

/**
 * Applies every rule of format 1 in its order (corrupt container, then not secure, then payload
 * integrity) and throws a PackageRejectedError with the first failure. Reads the file once, as a
 * stream: memory does not grow with the payload.
 */
export async function verifyPackage(file: string, options: VerifyOptions): Promise<VerifiedPackage> {
  return verifyMembers(readPackageArchive(file), options);
}

/**
 * The same rules over a container being read elsewhere (a PackageArchiveReader fed by a download):
 * step 1 is the reader's, the rest is here.
 */
export async function verifyMembers(read: Promise<PackageMembers>, options: VerifyOptions): Promise<VerifiedPackage> {
  const now = options.now ?? new Date();
  // 1. Corrupt: container, manifest, certificate bundle.
  const members = await read;
  const manifest = parseManifest(members.manifestBytes);
  if (members.signature.length === 0) throw corrupt('manifest.sig is empty');
  const certificates = parseSignerPem(members.signerPem);

  // 2. Not secure: chain, manifest signature, expiry.
  const chain = verifyChain(certificates, options.trust, now);
  const signer = chain[0] as CertificateInfo;
  if (!signatureMatches(members.manifestBytes, members.signature, signer.x509.publicKey)) {
    throw notSecure('the manifest signature does not verify with the signer certificate (manifest.json was altered or signed with another key)');
  }
  if (manifest.expires !== undefined && Date.parse(manifest.expires) <= now.getTime()) {
    throw notSecure(`the package expired on ${new Date(manifest.expires).toISOString()}`);
  }

  // 3. Corrupt: the payload is the one the signed manifest describes.
  if (members.payload.size !== manifest.payload.size) {
    throw corrupt(`payload size does not match the manifest (${members.payload.size} bytes, manifest says ${manifest.payload.size})`);
  }
  if (members.payload.sha256 !== manifest.payload.sha256) {
    throw corrupt('payload checksum does not match the manifest');
  }
  return { manifest, manifestSha256: members.manifestSha256, signer: summarize(signer), chain: chain.map(summarize), payload: members.payload };
}
