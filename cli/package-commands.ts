import { parseArgs } from 'node:util';
import { buildPackage } from '../lib/package-builder.js';
import { verifyPackage } from '../lib/package-verifier.js';
import { loadTrustStore } from '../lib/trust-store.js';
import { PackageRejectedError } from '../lib/errors.js';
import { escapeControl, safeJson } from '../lib/text.js';
import { UsageError, type CliIo } from './io.js';

export const PACKAGE_HELP = `propagator package build --payload DIR --product NAME --version X.Y.Z --key KEY.pem --chain CHAIN.pem --out FILE
                        [--expires ISO] [--min-version X.Y.Z] [--description TEXT] [--gzip] [--trust PATH]
    Builds a signed update package (format 1). An encrypted key reads its passphrase from
    PROPAGATOR_KEY_PASSPHRASE. With --trust, the new package is verified before the command ends.
propagator package verify FILE [--trust PATH]
    Verifies a package against a trust store (a PEM file or a folder of PEM root certificates;
    default: $PROPAGATOR_TRUST, else certs/trusted). Exit 0 and a JSON summary, or exit 1 and the reason.`;

function required(values: Record<string, string | boolean | undefined>, names: string[]): void {
  const missing = names.filter((n) => typeof values[n] !== 'string' || values[n] === '');
  if (missing.length > 0) throw new UsageError(`missing ${missing.map((n) => `--${n}`).join(', ')}`);
}

export function defaultTrust(io: CliIo): string {
  return io.env.PROPAGATOR_TRUST ?? 'certs/trusted';
}

async function verifyAndPrint(file: string, trustPath: string, io: CliIo): Promise<number> {
  const trust = await loadTrustStore(trustPath);
  try {
    const result = await verifyPackage(file, { trust });
    const { manifest } = result;
    // Every value here comes from the package: no control character reaches the terminal raw.
    io.out(safeJson({
      valid: true,
      product: manifest.product,
      version: manifest.version,
      created: manifest.created,
      expires: manifest.expires ?? null,
      minVersion: manifest.minVersion ?? null,
      description: manifest.description ?? null,
      unpackedSize: manifest.unpackedSize ?? null,
      signer: result.signer.subject,
      chain: result.chain.map((c) => ({ subject: c.subject, issuer: c.issuer, notAfter: c.notAfter, sha256Fingerprint: c.fingerprint })),
      payload: result.payload,
    }, 2));
    return 0;
  } catch (err) {
    if (err instanceof PackageRejectedError) {
      io.err(escapeControl(err.message));
      return 1;
    }
    throw err;
  }
}

export async function packageVerify(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { trust: { type: 'string' } } });
  if (positionals.length !== 1) throw new UsageError('package verify takes exactly one FILE');
  return verifyAndPrint(positionals[0] as string, values.trust ?? defaultTrust(io), io);
}

export async function packageBuild(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      payload: { type: 'string' }, product: { type: 'string' }, version: { type: 'string' },
      key: { type: 'string' }, chain: { type: 'string' }, out: { type: 'string' },
      expires: { type: 'string' }, 'min-version': { type: 'string' }, description: { type: 'string' },
      gzip: { type: 'boolean' }, trust: { type: 'string' },
    },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}`);
  required(values, ['payload', 'product', 'version', 'key', 'chain', 'out']);
  const result = await buildPackage({
    payloadDir: values.payload as string,
    product: values.product as string,
    version: values.version as string,
    keyFile: values.key as string,
    chainFile: values.chain as string,
    outFile: values.out as string,
    expires: values.expires,
    minVersion: values['min-version'],
    description: values.description,
    gzip: values.gzip ?? false,
    keyPassphrase: io.env.PROPAGATOR_KEY_PASSPHRASE,
  });
  for (const warning of result.warnings) io.err(`warning: ${escapeControl(warning)}`);
  const { manifest } = result;
  io.err(`built ${result.file}: ${manifest.product} ${manifest.version}, payload ${manifest.payload.size} bytes, sha256 ${manifest.payload.sha256}`);
  if (values.trust !== undefined) return verifyAndPrint(result.file, values.trust, io);
  io.out(result.file);
  return 0;
}
