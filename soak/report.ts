import type { Check } from './checks.js';
import type { FinishedOperation } from './operations.js';

/** A target message with its numbers, versions and digests taken out, so alike outcomes group together. */
export function messageShape(message: string): string {
  return message
    .replace(/[0-9a-f]{16,}/g, 'H')
    .replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, 'TIME')
    .replace(/\d+(\.\d+)*/g, 'N')
    .slice(0, 160);
}

/**
 * The targets that did not succeed, grouped by action, package kind, state and message shape, most
 * frequent first. An unhealthy package's failed apply is what the soak asks for; the rest is what
 * the faults did (and what to look at).
 */
export function outcomeSummary(finished: FinishedOperation[]): string[] {
  const groups = new Map<string, number>();
  let targets = 0;
  for (const op of finished) {
    for (const t of op.targets) {
      targets++;
      if (t.state === 'succeeded') continue;
      const key = `${op.action} ${op.kind}: ${t.state} (${t.mode ?? '?'}) "${messageShape(t.message)}"`;
      groups.set(key, (groups.get(key) ?? 0) + 1);
    }
  }
  const lines = [...groups.entries()].sort((a, b) => b[1] - a[1]).map(([key, n]) => `${String(n).padStart(4)} × ${key}`);
  return [`${finished.length} operations followed, ${targets} targets; those that did not succeed:`, ...(lines.length ? lines : ['   none'])];
}

export function checkLines(checks: Check[]): string[] {
  return checks.flatMap((c) => [`${c.pass ? 'PASS' : 'FAIL'}  ${c.name}`, ...c.details.map((d) => `      ${d.replace(/\n/g, '\n      ')}`)]);
}
