import { X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { escapeControl } from './text.js';

/**
 * One X.509 certificate with the facts the chain rules need.
 *
 * Why two libraries: node-forge cannot load certificates with EC keys, and Node's X509Certificate
 * (v20) does not expose the signature algorithm, the keyUsage bits, pathLenConstraint or the exact
 * validity instants. So Node's crypto does everything that touches keys and signatures (RSA and
 * EC alike), and forge's DER decoder reads the remaining fields straight from the ASN.1.
 */
export interface CertificateInfo {
  x509: X509Certificate;
  subject: string;
  issuer: string;
  fingerprint: string;
  notBefore: Date;
  notAfter: Date;
  signatureAlgorithm: { oid: string; name: string; weakHash: string | null };
  basicConstraints: { ca: boolean; pathLen: number | null } | null;
  keyUsage: Set<string> | null;
  extKeyUsage: string[] | null;
  unknownCriticalExtensions: string[];
}

export const OID_CODE_SIGNING = '1.3.6.1.5.5.7.3.3';
export const OID_ANY_EKU = '2.5.29.37.0';
const EKU_NAMES: Record<string, string> = {
  '1.3.6.1.5.5.7.3.1': 'serverAuth',
  '1.3.6.1.5.5.7.3.2': 'clientAuth',
  [OID_CODE_SIGNING]: 'codeSigning',
  '1.3.6.1.5.5.7.3.4': 'emailProtection',
  '1.3.6.1.5.5.7.3.8': 'timeStamping',
  '1.3.6.1.5.5.7.3.9': 'OCSPSigning',
  [OID_ANY_EKU]: 'anyExtendedKeyUsage',
};

/** An extended key usage by its usual name ("serverAuth"), or its OID when it has none. */
export function ekuName(oid: string): string {
  return EKU_NAMES[oid] ?? oid;
}
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_KEY_USAGE = '2.5.29.15';
const OID_EXT_KEY_USAGE = '2.5.29.37';
const OID_RSASSA_PSS = '1.2.840.113549.1.1.10';
// Extensions whose meaning this verifier understands or that cannot loosen a chain; any other
// extension marked critical makes the certificate unusable (RFC 5280, 4.2).
const UNDERSTOOD = new Set([
  OID_BASIC_CONSTRAINTS, OID_KEY_USAGE, OID_EXT_KEY_USAGE,
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.17', // subjectAltName
  '2.5.29.32', // certificatePolicies
]);

const SIGNATURE_ALGORITHMS: Record<string, { name: string; weakHash: string | null }> = {
  '1.2.840.113549.1.1.2': { name: 'md2WithRSAEncryption', weakHash: 'MD2' },
  '1.2.840.113549.1.1.4': { name: 'md5WithRSAEncryption', weakHash: 'MD5' },
  '1.2.840.113549.1.1.5': { name: 'sha1WithRSAEncryption', weakHash: 'SHA-1' },
  '1.3.14.3.2.29': { name: 'sha1WithRSASignature', weakHash: 'SHA-1' },
  '1.2.840.10045.4.1': { name: 'ecdsa-with-SHA1', weakHash: 'SHA-1' },
  '1.2.840.10040.4.3': { name: 'dsa-with-SHA1', weakHash: 'SHA-1' },
  '1.2.840.113549.1.1.11': { name: 'sha256WithRSAEncryption', weakHash: null },
  '1.2.840.113549.1.1.12': { name: 'sha384WithRSAEncryption', weakHash: null },
  '1.2.840.113549.1.1.13': { name: 'sha512WithRSAEncryption', weakHash: null },
  '1.2.840.10045.4.3.2': { name: 'ecdsa-with-SHA256', weakHash: null },
  '1.2.840.10045.4.3.3': { name: 'ecdsa-with-SHA384', weakHash: null },
  '1.2.840.10045.4.3.4': { name: 'ecdsa-with-SHA512', weakHash: null },
};
const PSS_HASHES: Record<string, string | null> = {
  '1.3.14.3.2.26': 'SHA-1',
  '2.16.840.1.101.3.4.2.1': null,
  '2.16.840.1.101.3.4.2.2': null,
  '2.16.840.1.101.3.4.2.3': null,
};
const KEY_USAGE_BITS = [
  'digitalSignature', 'nonRepudiation', 'keyEncipherment', 'dataEncipherment',
  'keyAgreement', 'keyCertSign', 'cRLSign', 'encipherOnly', 'decipherOnly',
];

type Asn1 = forge.asn1.Asn1;
const { asn1 } = forge;

function children(node: Asn1 | undefined): Asn1[] {
  return node && Array.isArray(node.value) ? node.value : [];
}

function bytes(node: Asn1 | undefined): string {
  return node && typeof node.value === 'string' ? node.value : '';
}

function oidOf(node: Asn1 | undefined): string {
  return asn1.derToOid(bytes(node));
}

function timeOf(node: Asn1 | undefined): Date {
  if (!node) throw new Error('missing validity time');
  return node.type === asn1.Type.UTCTIME ? asn1.utcTimeToDate(bytes(node)) : asn1.generalizedTimeToDate(bytes(node));
}

// forge accepts an options object here; its type declarations only know the older boolean form.
type FromDer = (input: forge.util.ByteStringBuffer, options: { strict: boolean; parseAllBytes: boolean; decodeBitStrings: boolean }) => Asn1;

function derOf(binary: string): Asn1 {
  return (asn1.fromDer as unknown as FromDer)(forge.util.createBuffer(binary), { strict: true, parseAllBytes: true, decodeBitStrings: false });
}

function signatureAlgorithmOf(algorithm: Asn1 | undefined): CertificateInfo['signatureAlgorithm'] {
  const oid = oidOf(children(algorithm)[0]);
  if (oid === OID_RSASSA_PSS) {
    // RSASSA-PSS-params: hashAlgorithm [0] defaults to SHA-1 when absent.
    const params = children(children(algorithm)[1]);
    const hashField = params.find((p) => p.tagClass === asn1.Class.CONTEXT_SPECIFIC && p.type === 0);
    const hashOid = hashField ? oidOf(children(children(hashField)[0])[0]) : '1.3.14.3.2.26';
    const weak = hashOid in PSS_HASHES ? PSS_HASHES[hashOid] ?? null : `unknown hash ${hashOid}`;
    return { oid, name: 'RSASSA-PSS', weakHash: weak };
  }
  const known = SIGNATURE_ALGORITHMS[oid];
  return { oid, name: known?.name ?? oid, weakHash: known ? known.weakHash : `unknown algorithm ${oid}` };
}

function readExtensions(tbs: Asn1[]): Pick<CertificateInfo, 'basicConstraints' | 'keyUsage' | 'extKeyUsage' | 'unknownCriticalExtensions'> {
  const result: ReturnType<typeof readExtensions> = {
    basicConstraints: null, keyUsage: null, extKeyUsage: null, unknownCriticalExtensions: [],
  };
  const wrapper = tbs.find((n) => n.tagClass === asn1.Class.CONTEXT_SPECIFIC && n.type === 3);
  for (const ext of children(children(wrapper)[0])) {
    const parts = children(ext);
    const id = oidOf(parts[0]);
    const critical = parts[1]?.type === asn1.Type.BOOLEAN && bytes(parts[1]).charCodeAt(0) !== 0;
    const value = derOf(bytes(parts[parts.length - 1]));
    if (id === OID_BASIC_CONSTRAINTS) {
      const fields = children(value);
      const caField = fields.find((f) => f.type === asn1.Type.BOOLEAN);
      const lenField = fields.find((f) => f.type === asn1.Type.INTEGER);
      result.basicConstraints = {
        ca: caField ? bytes(caField).charCodeAt(0) !== 0 : false,
        pathLen: lenField ? forge.util.createBuffer(bytes(lenField)).getInt(bytes(lenField).length * 8) : null,
      };
    } else if (id === OID_KEY_USAGE) {
      const bits = bytes(value);
      const usage = new Set<string>();
      KEY_USAGE_BITS.forEach((name, i) => {
        const octet = bits.charCodeAt(1 + Math.floor(i / 8));
        if (!Number.isNaN(octet) && (octet & (0x80 >> (i % 8))) !== 0) usage.add(name);
      });
      result.keyUsage = usage;
    } else if (id === OID_EXT_KEY_USAGE) {
      result.extKeyUsage = children(value).map((n) => oidOf(n));
    } else if (critical && !UNDERSTOOD.has(id)) {
      result.unknownCriticalExtensions.push(id);
    }
  }
  return result;
}

/**
 * "C=FR\nO=Acme\nCN=Signer" as Node prints it, on one line. Node escapes C0 controls in names
 * but not C1 or bidirectional ones: escaped here, a subject is safe in every message and log.
 */
export function oneLineName(name: string): string {
  return escapeControl(name.split('\n').join(', '));
}

/** Parses one PEM or DER certificate; throws a plain Error with a short reason when it cannot. */
export function readCertificate(input: string | Buffer): CertificateInfo {
  const x509 = new X509Certificate(input);
  const root = derOf(x509.raw.toString('binary'));
  const [tbsNode, algorithm] = children(root);
  const tbs = children(tbsNode);
  // TBSCertificate: [0] version (optional), serial, signature, issuer, validity, subject, spki, ...
  const offset = tbs[0]?.tagClass === asn1.Class.CONTEXT_SPECIFIC ? 1 : 0;
  const validity = children(tbs[offset + 3]);
  return {
    x509,
    subject: oneLineName(x509.subject),
    issuer: oneLineName(x509.issuer),
    fingerprint: x509.fingerprint256,
    notBefore: timeOf(validity[0]),
    notAfter: timeOf(validity[1]),
    signatureAlgorithm: signatureAlgorithmOf(algorithm),
    ...readExtensions(tbs),
  };
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

/** The PEM blocks of a text, with their labels ("CERTIFICATE", "PRIVATE KEY"...). */
export function pemBlocks(text: string): { label: string; pem: string }[] {
  return [...text.matchAll(PEM_BLOCK)].map((m) => ({ label: m[1] ?? '', pem: m[0] }));
}
