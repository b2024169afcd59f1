import { constants, verify as verifySignature, type KeyObject } from 'node:crypto';
import { ekuName, OID_ANY_EKU, OID_CODE_SIGNING, pemBlocks, readCertificate, type CertificateInfo } from './certificate.js';
import { corrupt, errorMessage, notSecure } from './errors.js';
import { escapeControl } from './text.js';
import type { TrustStore } from './trust-store.js';

export const MAX_CHAIN_CERTIFICATES = 5;
const ALLOWED_CURVES = new Map([['prime256v1', 'P-256'], ['secp384r1', 'P-384']]);

/** Step 1 of format 1 for signer.pem: the signer first, then intermediates, nothing else. */
export function parseSignerPem(bytes: Buffer): CertificateInfo[] {
  const blocks = pemBlocks(bytes.toString('latin1'));
  const other = blocks.find((b) => b.label !== 'CERTIFICATE');
  if (other) throw corrupt(`signer.pem holds a "${other.label}" block; it must hold certificates only`);
  if (blocks.length === 0) throw corrupt('signer.pem holds no PEM certificate');
  if (blocks.length > MAX_CHAIN_CERTIFICATES) {
    throw corrupt(`signer.pem holds ${blocks.length} certificates (at most ${MAX_CHAIN_CERTIFICATES})`);
  }
  return blocks.map((b, i) => {
    try {
      return readCertificate(b.pem);
    } catch (err) {
      throw corrupt(`signer.pem certificate ${i + 1} cannot be parsed (${escapeControl(errorMessage(err))})`);
    }
  });
}

const day = (d: Date) => d.toISOString().slice(0, 10);

function role(chain: CertificateInfo[], index: number): string {
  const cert = chain[index];
  if (index === 0) return 'the signer certificate';
  if (index === chain.length - 1) return `the root certificate "${cert?.subject}"`;
  return `the intermediate certificate "${cert?.subject}"`;
}

function isIssuedBy(child: CertificateInfo, issuer: CertificateInfo): boolean {
  return child.issuer === issuer.subject;
}

/** The issuer among candidates whose signature checks out, else any with the right name. */
function findIssuer(child: CertificateInfo, candidates: CertificateInfo[]): CertificateInfo | undefined {
  const named = candidates.filter((c) => isIssuedBy(child, c));
  return named.find((c) => child.x509.verify(c.x509.publicKey)) ?? named[0];
}

/** Builds signer → intermediates → trusted root, or says where the path breaks. */
function buildPath(certs: CertificateInfo[], trust: TrustStore): CertificateInfo[] {
  const [signer, ...intermediates] = certs;
  if (!signer) throw corrupt('signer.pem holds no PEM certificate');
  const path = [signer];
  const unused = new Set(intermediates);
  for (let current = signer; ; ) {
    const trusted = trust.roots.find((r) => r.fingerprint === current.fingerprint);
    if (trusted && path.length > 1) return path;
    const root = findIssuer(current, trust.roots);
    if (root) {
      if (root.fingerprint !== current.fingerprint) path.push(root);
      return path;
    }
    const next = findIssuer(current, [...unused]);
    if (!next || next.fingerprint === current.fingerprint) {
      if (current.issuer === current.subject) {
        throw notSecure(path.length === 1
          ? `the signer certificate "${current.subject}" is self-signed and not in the trust store`
          : `the certificate chain ends at "${current.subject}", which is not in the trust store`);
      }
      throw notSecure(`the certificate chain does not lead to a trusted root: no trusted certificate "${current.issuer}" issued "${current.subject}"`);
    }
    unused.delete(next);
    path.push(next);
    current = next;
  }
}

function checkValidity(chain: CertificateInfo[], now: Date): void {
  chain.forEach((cert, i) => {
    if (now < cert.notBefore) throw notSecure(`${role(chain, i)} is not valid yet (valid from ${day(cert.notBefore)})`);
    if (now > cert.notAfter) throw notSecure(`${role(chain, i)} has expired (${day(cert.notAfter)})`);
  });
}

function checkIssuers(chain: CertificateInfo[]): void {
  for (let i = 1; i < chain.length; i++) {
    const issuer = chain[i] as CertificateInfo;
    const child = chain[i - 1] as CertificateInfo;
    if (!issuer.basicConstraints?.ca) throw notSecure(`${role(chain, i)} that issued "${child.subject}" is not a CA`);
    if (issuer.keyUsage && !issuer.keyUsage.has('keyCertSign')) {
      throw notSecure(`${role(chain, i)} is not allowed to sign certificates (no keyCertSign key usage)`);
    }
    // An issuer's extended key usage bounds what it may vouch for (as browsers and Windows read
    // it): a CA kept to serverAuth must not make code signers. The trust store's roots included:
    // a root that says it is for TLS only is not a code-signing root, whoever put it there.
    const eku = issuer.extKeyUsage;
    if (eku && !eku.includes(OID_CODE_SIGNING) && !eku.includes(OID_ANY_EKU)) {
      const allowed = eku.length > 0 ? `allows only ${eku.map(ekuName).join(', ')}` : 'allows nothing';
      throw notSecure(`${role(chain, i)} may not vouch for code signing (its extended key usage ${allowed})`);
    }
    const below = i - 1; // CA certificates between this one and the signer
    if (issuer.basicConstraints.pathLen !== null && below > issuer.basicConstraints.pathLen) {
      throw notSecure(`${role(chain, i)} allows ${issuer.basicConstraints.pathLen} intermediate CAs below it, the chain has ${below}`);
    }
    if (!child.x509.verify(issuer.x509.publicKey)) {
      throw notSecure(`the signature of ${role(chain, i - 1)} does not verify with the key of "${issuer.subject}"`);
    }
  }
  chain.forEach((cert, i) => {
    const unknown = cert.unknownCriticalExtensions[0];
    if (unknown) throw notSecure(`${role(chain, i)} has a critical extension this verifier does not know (${unknown})`);
  });
}

function checkSignerUsage(signer: CertificateInfo): void {
  if (signer.basicConstraints?.ca) {
    throw notSecure('the signer certificate is a CA certificate (basicConstraints CA:true); sign with an end-entity code-signing certificate');
  }
  if (signer.keyUsage && !signer.keyUsage.has('digitalSignature')) {
    throw notSecure('the signer certificate does not allow digitalSignature (key usage)');
  }
  if (!signer.extKeyUsage?.includes(OID_CODE_SIGNING)) {
    throw notSecure('the signer certificate is not a code-signing certificate (no codeSigning extended key usage)');
  }
}

function keyProblem(key: KeyObject): string | null {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'rsa' || key.asymmetricKeyType === 'rsa-pss') {
    const bits = details.modulusLength ?? 0;
    return bits < 2048 ? `has a ${bits}-bit RSA key (at least 2048 bits required)` : null;
  }
  if (key.asymmetricKeyType === 'ec') {
    const curve = details.namedCurve ?? 'unknown';
    return ALLOWED_CURVES.has(curve) ? null : `has an EC key on curve ${curve} (P-256 or P-384 required)`;
  }
  return `has a ${key.asymmetricKeyType ?? 'unknown'} key (RSA or EC P-256/P-384 required)`;
}

function checkKeys(chain: CertificateInfo[]): void {
  chain.forEach((cert, i) => {
    const problem = keyProblem(cert.x509.publicKey);
    if (problem) throw notSecure(`${role(chain, i)} ${problem}`);
  });
}

function checkSignatureHashes(chain: CertificateInfo[]): void {
  // A trust anchor's self-signature is never relied upon, so only certificates below it count.
  const relied = chain[chain.length - 1]?.subject === chain[chain.length - 1]?.issuer ? chain.slice(0, -1) : chain;
  relied.forEach((cert, i) => {
    const weak = cert.signatureAlgorithm.weakHash;
    if (weak) throw notSecure(`${role(chain, i)} is signed with ${weak} (${cert.signatureAlgorithm.name}); SHA-256 or stronger is required`);
  });
}

/**
 * Step 2 of format 1, certificate part: the chain leads to a trusted root and every link holds.
 * Returns the path from the signer to the trusted root.
 */
export function verifyChain(certs: CertificateInfo[], trust: TrustStore, now: Date): CertificateInfo[] {
  const chain = buildPath(certs, trust);
  checkValidity(chain, now);
  checkIssuers(chain);
  checkSignerUsage(chain[0] as CertificateInfo);
  checkKeys(chain);
  checkSignatureHashes(chain);
  return chain;
}

/** SHA-256 with RSA (PKCS#1 v1.5 or PSS) or ECDSA (DER), as `openssl dgst -sha256 -sign` writes it. */
export function signatureMatches(data: Buffer, signature: Buffer, key: KeyObject): boolean {
  const attempts =
    key.asymmetricKeyType === 'rsa'
      ? [{ key }, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO }]
      : [{ key, dsaEncoding: 'der' as const }];
  return attempts.some((options) => {
    try {
      return verifySignature('sha256', data, options, signature);
    } catch {
      return false;
    }
  });
}
