import assert from 'node:assert/strict';
import { access, readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import supertest from 'supertest';
import { makePackage } from './helpers/openssl-package.js';
import { ADMIN_PASSWORD, BASIC, createTestMaster, listenMaster, masterWithWaitingOperation } from './helpers/master.js';
import { tempDir } from './helpers/run.js';
import { createTestPki } from './helpers/test-pki.js';

// The attack of issue 11, point 3, as it happens: the admin's browser used HTTP Basic on the master
// once; later a page of another site makes that browser post to the master, and the browser sends
// the cached credentials with it.

const CHROMIUM = process.env.PROPAGATOR_CHROMIUM ?? '/usr/bin/chromium';
const present = await access(CHROMIUM).then(() => true, () => false);

describe('a page of another site, in a browser that used HTTP Basic on the master', { skip: present ? false : `Chromium not found at ${CHROMIUM} (apt-get install chromium): browser test skipped` }, () => {
  let work: string;
  let cleanup: () => Promise<void>;
  let m: Awaited<ReturnType<typeof createTestMaster>>;
  let master: { url: string; close(): Promise<void> };
  let evil: Server;
  let evilUrl: string;
  let browser: Browser;
  let operationId: number;
  let evilPackage: Buffer;

  const targetStates = async () => (await supertest(m.app).get(`/api/operations/${operationId}`).set('Authorization', BASIC).expect(200)).body.targets.map((t: { state: string }) => t.state) as string[];
  const packageNames = async () => (await supertest(m.app).get('/api/packages').set('Authorization', BASIC).expect(200)).body.map((p: { name: string }) => p.name) as string[];

  before(async () => {
    ({ dir: work, cleanup } = await tempDir());
    const pki = await createTestPki(path.join(work, 'pki'));
    let payload: string;
    ({ m, payload, operationId } = await masterWithWaitingOperation(work, pki, 'Genuine'));
    // A genuine, validly signed package the attacker got hold of (an old release, say).
    await writeFile(path.join(payload, 'watchdoc.conf'), 'old release\n');
    evilPackage = await readFile(await makePackage(work, 'old', { publisher: pki.good.rsa, payloadDir: payload, version: '0.5.0' }));
    master = await listenMaster(m);

    // The other site: "localhost" is another host name than the master's 127.0.0.1, so another site.
    evil = createServer((req, res) => {
      if (req.url === '/old.pkg') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(evilPackage);
        return;
      }
      const action = req.url === '/cancel' ? `${master.url}/api/operations/${operationId}/cancel` : '';
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(req.url === '/cancel'
        ? `<!doctype html><title>Win a prize</title><form id="f" method="post" action="${action}"></form><script>document.getElementById('f').submit()</script>`
        : `<!doctype html><title>Win a prize</title>
          <form id="f" method="post" enctype="multipart/form-data" action="${master.url}/api/packages">
            <input name="name" value="Planted by another site"><input id="file" type="file" name="package">
          </form>
          <script>
            fetch('/old.pkg').then((r) => r.blob()).then((blob) => {
              const files = new DataTransfer();
              files.items.add(new File([blob], 'old.pkg'));
              document.getElementById('file').files = files.files;
              document.getElementById('f').submit();
            });
          </script>`);
    });
    await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', () => resolve()));
    evilUrl = `http://localhost:${(evil.address() as AddressInfo).port}`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  after(async () => {
    await browser?.close();
    await new Promise((resolve) => (evil ? evil.close(resolve) : resolve(undefined)));
    await master?.close();
    await m?.cleanup();
    await cleanup();
  });

  it('cannot cancel an operation or upload a package with the cached credentials', async () => {
    const context = await browser.newContext({ httpCredentials: { username: 'admin', password: ADMIN_PASSWORD, origin: master.url } });
    try {
      const page = await context.newPage();
      // The admin used the API in this browser once: the 401 challenge, then the credentials.
      const visit = await page.goto(`${master.url}/api/servers`);
      assert.equal(visit?.status(), 200);
      assert.match(await page.textContent('body') ?? '', /"name":"print-away"/);

      const refusedLines = () => m.logs.filter((l) => l.includes('"msg":"cross-site request refused"'));
      const answer = page.waitForResponse((r) => r.url().endsWith(`/api/operations/${operationId}/cancel`));
      await page.goto(`${evilUrl}/cancel`);
      const cancel = await answer;
      assert.equal(cancel.status(), 403);
      assert.deepEqual(await cancel.json(), { error: `This request came from another site (Origin: ${evilUrl}) and was refused; use the console itself, or an API client` });
      assert.deepEqual(await targetStates(), ['pending'], 'the operation was not cancelled');
      assert.equal(refusedLines().length, 1);
      assert.match(refusedLines()[0] ?? '', /"method":"POST","path":"\/api\/operations\/\d+\/cancel","from":"Origin: http:\/\/localhost:\d+"/);

      const uploaded = page.waitForResponse((r) => r.url() === `${master.url}/api/packages`);
      await page.goto(`${evilUrl}/upload`);
      const upload = await uploaded;
      assert.equal(upload.status(), 403);
      assert.deepEqual(await upload.json(), { error: `This request came from another site (Origin: ${evilUrl}) and was refused; use the console itself, or an API client` });
      assert.equal(refusedLines().length, 2);
      assert.match(refusedLines()[1] ?? '', /"method":"POST","path":"\/api\/packages","from":"Origin: http:\/\/localhost:\d+"/);
      assert.deepEqual(await packageNames(), ['Genuine']);
      assert.deepEqual(await readdir(m.store.tmpDir), [], 'no upload left behind');

      // The same browser on the master itself still works with its cached credentials.
      const own = await page.goto(`${master.url}/api/servers`);
      assert.equal(own?.status(), 200);
    } finally {
      await context.close();
    }
  });
});
