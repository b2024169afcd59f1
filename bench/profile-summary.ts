// node dist/bench/profile-summary.js FILE.cpuprofile [N]: the functions with the most self time.
import { readFile } from 'node:fs/promises';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const [file, count] = process.argv.slice(2);
if (!file) throw new Error('usage: profile-summary FILE.cpuprofile [N]');
const profile = JSON.parse(await readFile(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map<string, number>();
profile.samples.forEach((id, i) => {
  const frame = byId.get(id)?.callFrame;
  const key = `${frame?.functionName || '(anonymous)'} ${(frame?.url ?? '').replace(/.*node_modules\//, '').replace(/.*\/dist\//, '')}:${frame?.lineNumber ?? 0}`;
  self.set(key, (self.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0));
});
const total = [...self.values()].reduce((a, b) => a + b, 0);
process.stdout.write(`total ${Math.round(total / 1000)} ms\n`);
for (const [key, micros] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, Number(count ?? 25))) {
  process.stdout.write(`${(micros / 1000).toFixed(0).padStart(7)} ms  ${((micros / total) * 100).toFixed(1).padStart(5)}%  ${key}\n`);
}
