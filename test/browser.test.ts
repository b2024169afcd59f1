import assert from 'node:assert/strict';
import { access, mkdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { writeDevCertificates } from '../lib/dev-certs.js';
import { buildPackage } from '../lib/package-builder.js';
import { startDemo, type DemoProcess } from './helpers/demo-process.js';
import { ROOT, tempDir } from './helpers/run.js';

// Debian's chromium, never a downloaded browser. .ci/run installs it; without it this suite says
// it is skipped instead of failing.
const CHROMIUM = process.env.PROPAGATOR_CHROMIUM ?? '/usr/bin/chromium';
const present = await access(CHROMIUM).then(() => true, () => false);
const ARTIFACTS = path.join(ROOT, 'test-artifacts', 'browser');

describe('the console in a real browser', { skip: present ? false : `Chromium not found at ${CHROMIUM} (apt-get install chromium): browser test skipped` }, () => {
  let work: string;
  let cleanup: () => Promise<void>;
  let demo: DemoProcess;
  let browser: Browser;
  let page: Page;
  let step = 0;

  const shot = async (name: string) => {
    await page.screenshot({ path: path.join(ARTIFACTS, `${String(++step).padStart(2, '0')}-${name}.png`), fullPage: true });
  };

  before(async () => {
    ({ dir: work, cleanup } = await tempDir());
    await mkdir(ARTIFACTS, { recursive: true });
    demo = await startDemo(path.join(work, 'demo-data'));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  });
  after(async () => {
    await browser?.close();
    demo?.child.kill('SIGINT');
    await demo?.exited;
    await cleanup();
  });

  it('logs in, adds updates, propagates and applies to all servers, and shows the domain at the new version', async () => {
    const demoCerts = path.join(work, 'demo-data', 'certs');
    // A valid package big enough to watch the progress bar, and one signed by an untrusted root.
    const payload = path.join(work, 'payload');
    await mkdir(path.join(payload, 'hooks'), { recursive: true });
    await writeFile(path.join(payload, 'watchdoc.conf'), 'version=6.1.5\n');
    await writeFile(path.join(payload, 'fonts.bin'), randomBytes(6 * 1024 * 1024));
    const large = path.join(work, 'watchdoc-6.1.5.pkg');
    await buildPackage({ payloadDir: payload, product: 'watchdoc', version: '6.1.5', keyFile: path.join(demoCerts, 'publisher.key'), chainFile: path.join(demoCerts, 'publisher.pem'), outFile: large });
    const strangers = await writeDevCertificates(path.join(work, 'stranger-certs'));
    const insecure = path.join(work, 'watchdoc-6.1.9-untrusted.pkg');
    await buildPackage({ payloadDir: payload, product: 'watchdoc', version: '6.1.9', keyFile: strangers.publisherKey, chainFile: strangers.publisherChain, outFile: insecure });

    await page.goto(`${demo.url}/servers`);
    assert.match(page.url(), /\/login\?next=%2Fservers$/);
    await shot('login');
    await page.fill('#password', demo.password);
    await page.click('button[type=submit]');
    await page.waitForURL(`${demo.url}/servers`);
    assert.match(await page.textContent('#parity') ?? '', /3 of 3 slave servers do not run watchdoc 6\.2\.0/);
    await shot('servers-before');

    // Add an update: throttle the upload so the progress bar can be seen moving.
    await page.click('text=Add an update');
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 2 * 1024 * 1024 });
    await page.fill('#name', 'Watchdoc 6.1.5 fonts');
    await page.setInputFiles('#package', large);
    await page.click('#upload-button');
    await page.waitForFunction(() => {
      const width = parseFloat((document.getElementById('progress-bar') as HTMLElement).style.width);
      return width > 5 && width < 95;
    }, undefined, { timeout: 20_000 });
    await shot('upload-in-progress');
    await page.waitForSelector('#verdict.ok', { timeout: 60_000 });
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    assert.equal(await page.$eval('#progress-bar', (el) => (el as HTMLElement).style.width), '100%');
    assert.match(await page.textContent('#verdict') ?? '', /✔ The update package “Watchdoc 6\.1\.5 fonts” is valid: watchdoc 6\.1\.5, signed by CN=Propagator Development Publisher/);
    await shot('upload-valid');

    await page.fill('#name', 'Untrusted publisher');
    await page.setInputFiles('#package', insecure);
    await page.click('#upload-button');
    await page.waitForSelector('#verdict.bad');
    // Both development roots are called the same: the impostor is caught by the signature check.
    assert.match(await page.textContent('#verdict') ?? '', /✖ This update package is not secure: the signature of the signer certificate does not verify with the key of "CN=Propagator Development Root CA/);
    await shot('upload-refused');

    for (const action of ['Propagate', 'Apply'] as const) {
      await page.click(`nav >> text=${action}`);
      await page.selectOption('#package', { label: 'Watchdoc 6.2.0 (demo) — watchdoc 6.2.0' });
      await page.check('#all-servers');
      assert.equal(await page.locator('input.server-choice:checked').count(), 3, '"All servers" ticks every server');
      await shot(`${action.toLowerCase()}-form`);
      await page.click('button:has-text("Validate")');
      await page.waitForURL(/\/operations\/\d+$/);
      // The report refreshes itself until the operation ends.
      await page.waitForSelector('#operation[data-state="succeeded"]', { timeout: 90_000 });
      const rows = await page.$$eval('#targets tbody tr', (trs) => trs.map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent?.trim() ?? '')));
      assert.deepEqual(rows.map((r) => [r[0], r[2], r[5]]), [
        ['print-lyon', 'succeeded', action === 'Apply' ? '6.2.0' : '6.1.0'],
        ['print-nantes', 'succeeded', action === 'Apply' ? '6.2.0' : '6.1.0'],
        ['print-paris', 'succeeded', action === 'Apply' ? '6.2.0' : '6.1.0'],
      ]);
      await shot(`${action.toLowerCase()}-report`);
    }

    await page.click('nav >> text=Print servers');
    // Versions are what the agents report; the page is server-rendered, so reload until they have.
    for (let i = 0; i < 30 && !/All 4 servers/.test((await page.textContent('#parity')) ?? ''); i++) {
      await new Promise((r) => setTimeout(r, 1000));
      await page.reload();
    }
    assert.match(await page.textContent('#parity') ?? '', /✔ All 4 servers run watchdoc 6\.2\.0, the master's version\./);
    const versions = await page.$$eval('#servers tbody tr', (trs) => trs.map((tr) => tr.querySelectorAll('td')[5]?.textContent?.trim()));
    assert.deepEqual(versions, ['watchdoc 6.2.0', 'watchdoc 6.2.0', 'watchdoc 6.2.0', 'watchdoc 6.2.0']);
    assert.equal(await page.$eval('#servers tbody tr td:nth-child(4)', (td) => td.textContent?.trim()), demo.url, 'the master shows the address it listens at');
    await shot('servers-after');

    // Sorting by a column, both ways, and the filter box of the Updates page.
    const names = () => page.$$eval('#servers tbody tr td.name', (tds) => tds.map((td) => td.textContent?.trim()));
    await page.click('#servers th:has-text("Name")');
    assert.deepEqual(await names(), ['master', 'print-lyon', 'print-nantes', 'print-paris']);
    await page.click('#servers th:has-text("Name")');
    assert.deepEqual(await names(), ['print-paris', 'print-nantes', 'print-lyon', 'master']);
    await page.click('nav >> text=Updates');
    await page.fill('input[data-filter="packages"]', 'fonts');
    assert.deepEqual(await page.$$eval('#packages tbody tr:not([hidden]) td.name', (tds) => tds.map((td) => td.textContent?.trim())), ['Watchdoc 6.1.5 fonts']);
    await shot('updates-filtered');
  });
});
