import { parseArgs } from 'node:util';
import { writeDevCertificates } from '../lib/dev-certs.js';
import { UsageError, type CliIo } from './io.js';

export const CERTS_HELP = `propagator certs init [--out DIR]
    Makes a development root CA (DIR/trusted/dev-root-ca.pem, the trust store) and a code-signing
    publisher certificate it issued (DIR/publisher.pem, DIR/publisher.key). Default DIR: certs.
    Refuses to overwrite existing files. For demos and tests only.`;

export async function certsInit(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { out: { type: 'string' } } });
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}`);
  const files = await writeDevCertificates(values.out ?? 'certs');
  io.out(`trust store (root CA certificate): ${files.rootCert}`);
  io.out(`root CA private key:               ${files.rootKey} (keep it secret; never commit it)`);
  io.out(`publisher certificate chain:       ${files.publisherChain}`);
  io.out(`publisher private key:             ${files.publisherKey} (keep it secret; never commit it)`);
  return 0;
}
