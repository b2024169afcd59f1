import { createHash, createHmac } from 'node:crypto';

/**
 * AWS Signature Version 4 of a presigned GET, computed from the specification alone (not with the
 * SDK that made it): what S3 itself computes to accept or refuse the URL. s3rver does not check
 * SigV4 signatures, so this is how the tests hold the master's presigned URLs to the protocol.
 * https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
 */
const encode = (text: string) => encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
const hmac = (key: Buffer | string, text: string) => createHmac('sha256', key).update(text, 'utf8').digest();

export interface PresignedCheck {
  /** The signature S3 would compute with this secret matches the URL's. */
  valid: boolean;
  expiresSeconds: number;
  signedAt: Date;
  credential: string;
}

export function checkPresignedGet(url: string, secret: string): PresignedCheck {
  const parsed = new URL(url);
  const query = [...parsed.searchParams.entries()];
  const get = (name: string) => parsed.searchParams.get(name) ?? '';
  const signedHeaders = get('X-Amz-SignedHeaders').split(';');
  if (signedHeaders.join(';') !== 'host') throw new Error(`signed headers other than host: ${signedHeaders.join(';')}`);
  const canonicalQuery = query
    .filter(([k]) => k !== 'X-Amz-Signature')
    .map(([k, v]): [string, string] => [encode(k), encode(v)])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const canonicalRequest = ['GET', parsed.pathname, canonicalQuery, `host:${parsed.host}`, '', 'host', 'UNSIGNED-PAYLOAD'].join('\n');
  const amzDate = get('X-Amz-Date');
  const [, date, region, service, terminal] = get('X-Amz-Credential').split('/');
  const scope = `${date}/${region}/${service}/${terminal}`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, createHash('sha256').update(canonicalRequest).digest('hex')].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, date ?? ''), region ?? ''), service ?? ''), terminal ?? '');
  const signature = createHmac('sha256', key).update(stringToSign).digest('hex');
  const when = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  return {
    valid: signature === get('X-Amz-Signature'),
    expiresSeconds: Number(get('X-Amz-Expires')),
    signedAt: when ? new Date(Date.UTC(+when[1]!, +when[2]! - 1, +when[3]!, +when[4]!, +when[5]!, +when[6]!)) : new Date(NaN),
    credential: get('X-Amz-Credential'),
  };
}
