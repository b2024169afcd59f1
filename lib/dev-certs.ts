import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import forge from 'node-forge';
import { ConfigurationError } from './errors.js';

/**
 * A development PKI for demos and tests: a root CA (goes in the trust store) and a code-signing
 * publisher certificate it issued. Made with node-forge, which serves well for RSA certificate
 * generation. Never for production: a real publisher's root key lives offline.
 */
export interface DevCertificates {
  rootCert: string;
  rootKey: string;
  publisherCert: string;
  publisherKey: string;
}

const { pki } = forge;
const YEAR_MS = 365 * 24 * 3600 * 1000;

function serial(): string {
  // Positive 128-bit serial: clear the top bit so DER does not read it as negative.
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return bytes.toString('hex');
}

function certificate(options: {
  subject: string;
  issuer: forge.pki.Certificate | null;
  publicKey: forge.pki.PublicKey;
  signingKey: forge.pki.rsa.PrivateKey;
  years: number;
  extensions: object[];
}): forge.pki.Certificate {
  const cert = pki.createCertificate();
  cert.publicKey = options.publicKey;
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + options.years * YEAR_MS);
  const attrs = [
    { name: 'commonName', value: options.subject },
    { name: 'organizationName', value: 'Propagator development (not for production)' },
  ];
  cert.setSubject(attrs);
  cert.setIssuer(options.issuer ? options.issuer.subject.attributes : attrs);
  cert.setExtensions(options.extensions);
  cert.sign(options.signingKey, forge.md.sha256.create());
  return cert;
}

export function generateDevCertificates(): DevCertificates {
  const root = pki.rsa.generateKeyPair({ bits: 3072, e: 0x10001 });
  const rootCert = certificate({
    subject: 'Propagator Development Root CA',
    issuer: null,
    publicKey: root.publicKey,
    signingKey: root.privateKey,
    years: 10,
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
      { name: 'subjectKeyIdentifier' },
    ],
  });
  const publisher = pki.rsa.generateKeyPair({ bits: 2048, e: 0x10001 });
  const publisherCert = certificate({
    subject: 'Propagator Development Publisher',
    issuer: rootCert,
    publicKey: publisher.publicKey,
    signingKey: root.privateKey,
    years: 2,
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', codeSigning: true },
      { name: 'subjectKeyIdentifier' },
      { name: 'authorityKeyIdentifier', keyIdentifier: rootCert.generateSubjectKeyIdentifier().getBytes() },
    ],
  });
  return {
    rootCert: pki.certificateToPem(rootCert),
    rootKey: pki.privateKeyToPem(root.privateKey),
    publisherCert: pki.certificateToPem(publisherCert),
    publisherKey: pki.privateKeyToPem(publisher.privateKey),
  };
}

export interface DevCertificateFiles {
  rootCert: string;
  rootKey: string;
  publisherChain: string;
  publisherKey: string;
}

export function devCertificatePaths(outDir: string): DevCertificateFiles {
  return {
    rootCert: path.join(outDir, 'trusted', 'dev-root-ca.pem'),
    rootKey: path.join(outDir, 'dev-root-ca.key'),
    publisherChain: path.join(outDir, 'publisher.pem'),
    publisherKey: path.join(outDir, 'publisher.key'),
  };
}

async function writeNew(file: string, content: string, mode: number): Promise<void> {
  try {
    await writeFile(file, content, { flag: 'wx', mode });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new ConfigurationError(`${file} already exists; refusing to overwrite it (move it away first if you really mean to replace it)`);
    }
    throw err;
  }
}

/** Writes the development PKI under outDir; refuses to touch a folder that already has one. */
export async function writeDevCertificates(outDir: string): Promise<DevCertificateFiles> {
  const files = devCertificatePaths(outDir);
  await mkdir(path.dirname(files.rootCert), { recursive: true });
  const present = Object.values(files).filter((f) => existsSync(f));
  if (present.length > 0) {
    throw new ConfigurationError(`${present.join(', ')} already exist${present.length === 1 ? 's' : ''}; refusing to overwrite (move them away first if you really mean to replace them)`);
  }
  const certs = generateDevCertificates();
  await writeNew(files.rootKey, certs.rootKey, 0o600);
  await writeNew(files.publisherKey, certs.publisherKey, 0o600);
  await writeNew(files.rootCert, certs.rootCert, 0o644);
  await writeNew(files.publisherChain, certs.publisherCert, 0o644);
  return files;
}
