import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, it } from 'node:test';
import { startDemo } from './helpers/demo-process.js';
import { tempDir } from './helpers/run.js';

let work: string;
let cleanup: () => Promise<void>;
before(async () => {
  ({ dir: work, cleanup } = await tempDir());
});
after(() => cleanup());

it('npm run demo starts a master and three agents, stops on Ctrl-C, and starts again', async () => {
  const dir = path.join(work, 'demo-data');
  for (let run = 1; run <= 2; run++) {
    const demo = await startDemo(dir);
    try {
      const auth = { authorization: `Basic ${Buffer.from(`admin:${demo.password}`).toString('base64')}` };
      const servers = (await (await fetch(`${demo.url}/api/servers`, { headers: auth })).json()) as { name: string; role: string; mode: string | null; version: string; status: string }[];
      assert.deepEqual(servers.map((s) => [s.name, s.role, s.mode, s.version, s.status]), [
        ['master', 'master', null, '6.2.0', 'online'],
        ['print-lyon', 'slave', 'mailbox', '6.1.0', 'online'],
        ['print-nantes', 'slave', 'mailbox', '6.1.0', 'online'],
        ['print-paris', 'slave', 'bidirectional', '6.1.0', 'online'],
      ]);
      const packages = (await (await fetch(`${demo.url}/api/packages`, { headers: auth })).json()) as { name: string; state: string }[];
      assert.deepEqual(packages.map((p) => [p.name, p.state]), [['Watchdoc 6.2.0 (demo)', 'valid']]);
    } finally {
      demo.child.kill('SIGINT');
    }
    assert.equal(await demo.exited, 0, `run ${run} stops cleanly`);
    assert.match(demo.output(), /Stopping the agents and the master…\nStopped\.\n$/);
  }
});
