import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { waitFor } from './helpers/master-process.js';
import { openProcessDomain, type ProcessDomain } from './helpers/process-domain.js';
import { makeRelease } from './helpers/releases.js';

// Staged copies do not outlive their package: a package deleted on the master is dropped by the
// agents that staged it (told in the authenticated answer to their next call), and a staged copy
// nobody used is dropped after --drop-staged-after. Real master and agent processes.

const TOKEN = 'removal-enrollment-token-0123456789';
let d: ProcessDomain;

before(async () => {
  d = await openProcessDomain(TOKEN);
  await d.startMaster();
});

after(async () => {
  await d.close();
});

const staging = (data: string) => readdir(path.join(data, 'staging'));

describe('staged copies', () => {
  it('are dropped by agents of both modes when the package is deleted on the master, and the console no longer lists them', async () => {
    const mailboxData = path.join(d.work, 'drop-mailbox');
    const bidiData = path.join(d.work, 'drop-bidi');
    const mailbox = await d.startAgent('drop-mailbox', 'mailbox', mailboxData);
    const bidi = await d.startAgent('drop-bidi', 'bidirectional', bidiData);
    const kept = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.2.0'), 'kept 6.2.0');
    const doomed = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.3.0'), 'doomed 6.3.0');
    for (const pkg of [kept, doomed]) {
      const targets = await d.ended(await d.operate('propagate', pkg.id, [mailbox.serverId, bidi.serverId]));
      assert.deepEqual(targets.map((t) => t.state), ['succeeded', 'succeeded']);
    }
    for (const id of [mailbox.serverId, bidi.serverId]) {
      await waitFor(async () => (await d.server(id)).staged.length === 2, 20_000, 'both packages listed as staged');
    }

    const deleted = await d.api('DELETE', `/api/packages/${doomed.id}`);
    assert.equal(deleted.status, 204);
    for (const [data, id] of [[mailboxData, mailbox.serverId], [bidiData, bidi.serverId]] as const) {
      await waitFor(async () => !(await staging(data)).some((f) => f.startsWith(doomed.sha256)), 20_000, `${data}: the deleted package to leave staging`);
      assert.deepEqual((await staging(data)).sort(), [`${kept.sha256}.json`, `${kept.sha256}.pkg`], 'the other package stays');
      await waitFor(async () => (await d.server(id)).staged.map((s) => s.sha256).join() === kept.sha256, 20_000, 'the server list to show only the kept package');
    }
    assert.match(mailbox.logs(), new RegExp(`"msg":"staged package dropped","agent":"drop-mailbox","sha256":"${doomed.sha256}","reason":"the master deleted it"`));
    assert.match(bidi.logs(), /"msg":"staged package dropped","agent":"drop-bidi"/);
  });

  it('are dropped when unused for --drop-staged-after', async () => {
    const data = path.join(d.work, 'drop-old');
    // 0.0001 days: 8.6 s.
    const agent = await d.startAgent('drop-old', 'mailbox', data, ['--drop-staged-after', '0.0001']);
    const pkg = await d.upload(await makeRelease(d.work, d.pki.good.rsa, '6.4.0'), 'old 6.4.0');
    const [target] = await d.ended(await d.operate('propagate', pkg.id, [agent.serverId]));
    assert.equal(target?.state, 'succeeded');
    assert.deepEqual((await staging(data)).sort(), [`${pkg.sha256}.json`, `${pkg.sha256}.pkg`]);
    await waitFor(async () => (await staging(data)).length === 0, 30_000, 'the unused staged package to be dropped');
    assert.match(agent.logs(), /"msg":"staged package dropped","agent":"drop-old","sha256":"[0-9a-f]{64}","reason":"not used for 0.0001 days"/);
    await waitFor(async () => (await d.server(agent.serverId)).staged.length === 0, 20_000, 'the server list to show nothing staged');
  });
});
