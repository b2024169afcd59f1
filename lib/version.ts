/**
 * Product versions as format 1 defines them: 1 to 4 dot-separated decimal numbers, compared
 * number by number, missing parts counting as 0 ("6.1" equals "6.1.0", "6.10" is newer than "6.9").
 */

const VERSION_PATTERN = /^\d{1,18}(\.\d{1,18}){0,3}$/;

export function isValidVersion(value: string): boolean {
  return VERSION_PATTERN.test(value);
}

function parts(version: string): bigint[] {
  if (!isValidVersion(version)) throw new Error(`not a version: ${version}`);
  const numbers = version.split('.').map((p) => BigInt(p));
  while (numbers.length < 4) numbers.push(0n);
  return numbers;
}

/** Negative when a is older than b, 0 when equal, positive when a is newer. */
export function compareVersions(a: string, b: string): number {
  const pa = parts(a);
  const pb = parts(b);
  for (let i = 0; i < 4; i++) {
    const x = pa[i] ?? 0n;
    const y = pb[i] ?? 0n;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}
