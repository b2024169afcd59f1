import { rm } from 'node:fs/promises';
import path from 'node:path';
import { makePackage } from '../test/helpers/openssl-package.js';
import { makeRandomPayload } from '../test/helpers/random-payload.js';
import { startMasterProcess } from '../test/helpers/master-process.js';
import type { BenchContext } from './run.js';
import { peakRssMb, round, seconds, sh, type Figure } from './support.js';

/** 1. A large package uploaded with curl: wall time and the master's peak memory. */
export async function uploadScenario(ctx: BenchContext): Promise<Figure[]> {
  const size = ctx.quick ? 256 * 1024 ** 2 : 1024 ** 3;
  const payload = path.join(ctx.work, 'upload-payload.tar.gz');
  await makeRandomPayload(payload, size);
  const file = await makePackage(ctx.work, 'upload', { publisher: ctx.publisher, payloadFile: payload, version: '1.0' });
  await rm(payload);

  // Reference: what any copy that also checks the file costs, on the same file.
  const copy = path.join(ctx.work, 'upload-copy.pkg');
  let start = process.hrtime.bigint();
  await sh('sha256sum', [file]);
  await sh('cp', [file, copy]);
  const reference = seconds(start);
  await rm(copy);

  const master = await startMasterProcess(['--data', path.join(ctx.work, 'upload-master'), '--trust', ctx.trust, '--log-level', 'warn'], { PROPAGATOR_ADMIN_PASSWORD: 'bench-password' });
  try {
    start = process.hrtime.bigint();
    const status = await sh('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-u', 'admin:bench-password', '-F', 'name=bench', '-F', `package=@${file}`, `${master.url}/api/packages`]);
    const wall = seconds(start);
    if (status.trim() !== '201') throw new Error(`upload answered ${status}`);
    const rss = await peakRssMb(master.child.pid as number);
    const label = `${Math.round(size / 1024 ** 2)} MiB`;
    return [
      { scenario: 'upload', name: `wall_seconds_${label.replace(' ', '')}`, value: round(wall), unit: 's', reference: { what: 'sha256sum + cp of the same file', value: round(reference), unit: 's' }, target: '≤ 2× reference', met: wall <= 2 * reference },
      { scenario: 'upload', name: 'ratio_to_reference', value: round(wall / reference), unit: '×', target: '≤ 2', met: wall <= 2 * reference },
      { scenario: 'upload', name: 'master_peak_rss', value: rss, unit: 'MB', target: '< 200 MB', met: rss < 200 },
    ];
  } finally {
    await master.stop();
    await rm(file);
  }
}
