import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { readCertificate, pemBlocks, type CertificateInfo } from './certificate.js';
import { ConfigurationError, errorMessage } from './errors.js';

/** The root certificates a verifier trusts: from one PEM file, or every .pem/.crt file of a folder. */
export interface TrustStore {
  source: string;
  roots: CertificateInfo[];
}

const CERT_FILE = /\.(pem|crt|cer)$/i;

async function certificatesOf(file: string): Promise<CertificateInfo[]> {
  const text = await readFile(file, 'utf8');
  return pemBlocks(text)
    .filter((b) => b.label === 'CERTIFICATE' || b.label === 'TRUSTED CERTIFICATE')
    .map((b, i) => {
      try {
        return readCertificate(b.pem);
      } catch (err) {
        throw new ConfigurationError(`trust store file ${file}: certificate ${i + 1} cannot be read (${errorMessage(err)})`);
      }
    });
}

export async function loadTrustStore(source: string): Promise<TrustStore> {
  let info;
  try {
    info = await stat(source);
  } catch {
    throw new ConfigurationError(`trust store ${source} does not exist`);
  }
  const files = info.isDirectory()
    ? (await readdir(source)).filter((f) => CERT_FILE.test(f)).sort().map((f) => path.join(source, f))
    : [source];
  const roots: CertificateInfo[] = [];
  for (const file of files) roots.push(...(await certificatesOf(file)));
  if (roots.length === 0) {
    throw new ConfigurationError(`trust store ${source} holds no certificate (expected PEM root CA certificates)`);
  }
  return { source, roots };
}
