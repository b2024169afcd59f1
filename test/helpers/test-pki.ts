import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { must } from './run.js';

/**
 * A throw-away code-signing PKI made with the openssl CLI (not with the project's code), so the
 * verifier is tested against certificates it had no hand in making.
 */
export interface Publisher {
  key: string;
  chain: string;
}

export interface TestPki {
  dir: string;
  /** The trust store: the root CA certificate. */
  root: string;
  otherRoot: string;
  good: { rsa: Publisher; ecP256: Publisher; ecP384: Publisher };
  bad: Record<BadPublisher, Publisher>;
}

export type BadPublisher =
  | 'expired' | 'notyet' | 'selfsigned' | 'weak1024' | 'sha1' | 'md5' | 'noeku' | 'nodigsig'
  | 'nochain' | 'otherroot' | 'notca' | 'ecP521' | 'toolong';

const EXTENSIONS = `[ req ]
distinguished_name = dn
[ dn ]
[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ v3_sign ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ v3_tls ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
[ v3_nodigsig ]
basicConstraints = critical, CA:false
keyUsage = critical, keyEncipherment
extendedKeyUsage = codeSigning
[ v3_ca_tls ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
extendedKeyUsage = serverAuth
[ v3_ca_tls_client ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
extendedKeyUsage = serverAuth, clientAuth
[ v3_ca_code ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
extendedKeyUsage = codeSigning
[ v3_ca_any ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
extendedKeyUsage = anyExtendedKeyUsage
[ v3_sign_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, digitalSignature, keyCertSign
extendedKeyUsage = codeSigning
`;

const CA_CONFIG = `[ ca ]
default_ca = local
[ local ]
database = $ENV::CADIR/index.txt
new_certs_dir = $ENV::CADIR
serial = $ENV::CADIR/serial
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[ any ]
commonName = supplied
`;

export async function createTestPki(dir: string): Promise<TestPki> {
  await mkdir(path.join(dir, 'ca', 'db'), { recursive: true });
  const p = (name: string) => path.join(dir, name);
  const ext = p('ca/ext.cnf');
  await writeFile(ext, EXTENSIONS);
  await writeFile(p('ca/ca.cnf'), CA_CONFIG);
  await writeFile(p('ca/db/index.txt'), '');
  await writeFile(p('ca/db/serial'), '1000\n');

  const selfSigned = (name: string, keyArgs: string[], extension: string, subject: string) =>
    must('openssl', ['req', '-x509', '-newkey', ...keyArgs, '-nodes', '-keyout', p(`${name}.key`), '-out', p(`${name}.pem`),
      '-days', '3650', '-sha256', '-subj', `/CN=${subject}`, '-config', ext, '-extensions', extension]);
  const issue = async (name: string, keyArgs: string[], md: string, extension: string, issuer: string, env: NodeJS.ProcessEnv = {}) => {
    const cn = name === 'intermediate' ? 'Test Update Intermediate CA' : `Test Publisher ${name}`;
    await must('openssl', ['req', '-newkey', ...keyArgs, '-nodes', '-keyout', p(`${name}.key`), '-out', p(`ca/${name}.csr`), '-subj', `/CN=${cn}`]);
    const args = ['x509', '-req', '-in', p(`ca/${name}.csr`), '-CA', p(`${issuer}.pem`), '-CAkey', p(`${issuer}.key`),
      '-set_serial', String(Math.floor(Math.random() * 1e9) + 1), '-out', p(`${name}.pem`), '-days', '825', `-${md}`, '-extfile', ext, '-extensions', extension];
    await must('openssl', args, { env });
  };
  const chainOf = async (name: string, ...rest: string[]): Promise<Publisher> => {
    const parts = await Promise.all([name, ...rest].map((n) => readFile(p(`${n}.pem`), 'utf8')));
    await writeFile(p(`${name}-chain.pem`), parts.join(''));
    return { key: p(`${name}.key`), chain: p(`${name}-chain.pem`) };
  };
  const rsa = (bits: number) => [`rsa:${bits}`];
  const ec = (curve: string) => ['ec', '-pkeyopt', `ec_paramgen_curve:${curve}`];

  await selfSigned('root', rsa(3072), 'v3_ca', 'Test Update Root CA');
  await issue('intermediate', rsa(3072), 'sha256', 'v3_ca', 'root');
  await selfSigned('other-root', rsa(2048), 'v3_ca', 'Other Root CA');

  await Promise.all([
    issue('signer', rsa(2048), 'sha256', 'v3_sign', 'intermediate'),
    issue('ec-p256', ec('P-256'), 'sha256', 'v3_sign', 'intermediate'),
    issue('ec-p384', ec('P-384'), 'sha384', 'v3_sign', 'intermediate'),
    issue('ec-p521', ec('P-521'), 'sha256', 'v3_sign', 'intermediate'),
    issue('sha1', rsa(2048), 'sha1', 'v3_sign', 'intermediate'),
    issue('noeku', rsa(2048), 'sha256', 'v3_tls', 'intermediate'),
    issue('nodigsig', rsa(2048), 'sha256', 'v3_nodigsig', 'intermediate'),
    issue('nochain', rsa(2048), 'sha256', 'v3_sign', 'intermediate'),
    issue('otherroot', rsa(2048), 'sha256', 'v3_sign', 'other-root'),
    // A leaf that is not a CA, used as the issuer of the "notca" publisher.
    issue('leafissuer', rsa(2048), 'sha256', 'v3_sign', 'intermediate'),
    // Recent OpenSSL refuses 1024-bit keys and MD5 at its default security level.
    issue('weak1024', rsa(1024), 'sha256', 'v3_sign', 'intermediate', { OPENSSL_CONF: '/dev/null' }),
    issue('md5', rsa(2048), 'md5', 'v3_sign', 'intermediate', { OPENSSL_CONF: '/dev/null' }),
    selfSigned('selfsigned', rsa(2048), 'v3_sign', 'Test Publisher selfsigned'),
  ]);
  await issue('notca', rsa(2048), 'sha256', 'v3_sign', 'leafissuer');
  for (const [name, start, end] of [['expired', '20200101000000Z', '20210101000000Z'], ['notyet', '20990101000000Z', '21000101000000Z']] as const) {
    await must('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p(`${name}.key`), '-out', p(`ca/${name}.csr`), '-subj', `/CN=Test Publisher ${name}`]);
    await must('openssl', ['ca', '-batch', '-config', p('ca/ca.cnf'), '-extfile', ext, '-extensions', 'v3_sign', '-notext',
      '-cert', p('intermediate.pem'), '-keyfile', p('intermediate.key'), '-in', p(`ca/${name}.csr`), '-out', p(`${name}.pem`),
      '-startdate', start, '-enddate', end], { env: { CADIR: p('ca/db') } });
  }
  const toolong = await chainOf('signer', 'intermediate', 'intermediate', 'intermediate', 'intermediate', 'intermediate');
  await writeFile(p('toolong-chain.pem'), await readFile(toolong.chain));
  return {
    dir,
    root: p('root.pem'),
    otherRoot: p('other-root.pem'),
    good: {
      rsa: await chainOf('signer', 'intermediate'),
      ecP256: await chainOf('ec-p256', 'intermediate'),
      ecP384: await chainOf('ec-p384', 'intermediate'),
    },
    bad: {
      expired: await chainOf('expired', 'intermediate'),
      notyet: await chainOf('notyet', 'intermediate'),
      selfsigned: await chainOf('selfsigned'),
      weak1024: await chainOf('weak1024', 'intermediate'),
      sha1: await chainOf('sha1', 'intermediate'),
      md5: await chainOf('md5', 'intermediate'),
      noeku: await chainOf('noeku', 'intermediate'),
      nodigsig: await chainOf('nodigsig', 'intermediate'),
      nochain: await chainOf('nochain'),
      otherroot: await chainOf('otherroot'),
      notca: await chainOf('notca', 'leafissuer', 'intermediate'),
      ecP521: await chainOf('ec-p521', 'intermediate'),
      toolong: { key: p('signer.key'), chain: p('toolong-chain.pem') },
    },
  };
}

/** Issuers with an extended key usage, a CA used as a signer, and roots with one (EC P-256 keys, quick to make). */
export interface EkuPki {
  /** Signers under intermediates whose EKU is serverAuth, serverAuth + clientAuth, codeSigning, anyExtendedKeyUsage. */
  underTls: Publisher;
  underTlsClient: Publisher;
  underCode: Publisher;
  underAny: Publisher;
  /** A code-signing certificate with basicConstraints CA:true, under the usual intermediate. */
  caSigner: Publisher;
  /** Roots (for a trust store of their own) with EKU serverAuth and codeSigning, each with a signer. */
  tlsRoot: { root: string; publisher: Publisher };
  codeRoot: { root: string; publisher: Publisher };
}

/** Adds the extended key usage cases to a test PKI, made with the openssl CLI like the rest. */
export async function createEkuPki(pki: TestPki): Promise<EkuPki> {
  const p = (name: string) => path.join(pki.dir, name);
  const ext = p('ca/ext.cnf');
  const key = ['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
  const make = async (name: string, cn: string, extension: string, issuer: string | null) => {
    if (issuer === null) {
      await must('openssl', ['req', '-x509', '-newkey', ...key, '-nodes', '-keyout', p(`${name}.key`), '-out', p(`${name}.pem`),
        '-days', '3650', '-sha256', '-subj', `/CN=${cn}`, '-config', ext, '-extensions', extension]);
      return;
    }
    await must('openssl', ['req', '-newkey', ...key, '-nodes', '-keyout', p(`${name}.key`), '-out', p(`ca/${name}.csr`), '-subj', `/CN=${cn}`]);
    await must('openssl', ['x509', '-req', '-in', p(`ca/${name}.csr`), '-CA', p(`${issuer}.pem`), '-CAkey', p(`${issuer}.key`),
      '-set_serial', String(Math.floor(Math.random() * 1e9) + 1), '-out', p(`${name}.pem`), '-days', '825', '-sha256', '-extfile', ext, '-extensions', extension]);
  };
  const chain = async (...names: string[]): Promise<Publisher> => {
    const parts = await Promise.all(names.map((n) => readFile(p(`${n}.pem`), 'utf8')));
    await writeFile(p(`${names[0]}-chain.pem`), parts.join(''));
    return { key: p(`${names[0]}.key`), chain: p(`${names[0]}-chain.pem`) };
  };
  await Promise.all([
    make('ca-tls', 'Test TLS-only Intermediate CA', 'v3_ca_tls', 'root'),
    make('ca-tls-client', 'Test TLS Client Intermediate CA', 'v3_ca_tls_client', 'root'),
    make('ca-code', 'Test Code-signing Intermediate CA', 'v3_ca_code', 'root'),
    make('ca-any', 'Test Any-usage Intermediate CA', 'v3_ca_any', 'root'),
    make('root-tls', 'Test TLS-only Root CA', 'v3_ca_tls', null),
    make('root-code', 'Test Code-signing Root CA', 'v3_ca_code', null),
    make('ca-signer', 'Test Publisher that is a CA', 'v3_sign_ca', 'intermediate'),
  ]);
  await Promise.all([
    make('under-tls', 'Test Publisher under TLS CA', 'v3_sign', 'ca-tls'),
    make('under-tls-client', 'Test Publisher under TLS client CA', 'v3_sign', 'ca-tls-client'),
    make('under-code', 'Test Publisher under code CA', 'v3_sign', 'ca-code'),
    make('under-any', 'Test Publisher under any CA', 'v3_sign', 'ca-any'),
    make('under-root-tls', 'Test Publisher under TLS root', 'v3_sign', 'root-tls'),
    make('under-root-code', 'Test Publisher under code root', 'v3_sign', 'root-code'),
  ]);
  return {
    underTls: await chain('under-tls', 'ca-tls'),
    underTlsClient: await chain('under-tls-client', 'ca-tls-client'),
    underCode: await chain('under-code', 'ca-code'),
    underAny: await chain('under-any', 'ca-any'),
    caSigner: await chain('ca-signer', 'intermediate'),
    tlsRoot: { root: p('root-tls.pem'), publisher: await chain('under-root-tls') },
    codeRoot: { root: p('root-code.pem'), publisher: await chain('under-root-code') },
  };
}
