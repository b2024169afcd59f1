import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { ADMIN_PASSWORD, BASIC, createTestMaster, csrfOf, listenMaster, loginAgent, masterWithWaitingOperation } from './helpers/master.js';
import { BOUNDARY, multipartHead, multipartTail } from './helpers/master-process.js';
import { cookiesOf, form, rawRequest, type RawResponse } from './helpers/http-request.js';
import { tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

// A browser that once used HTTP Basic on the master sends those credentials again with any request
// to it, also one a page of another site makes it send: every state-changing route must look at
// where the request came from, not only at its credentials.

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let m: Awaited<ReturnType<typeof createTestMaster>>;
let served: { url: string; close(): Promise<void> };
let operationId: number;
let packageId: number;

const EVIL = 'http://evil.example';
const refusal = (evidence: string) => `This request came from another site (${evidence}) and was refused; use the console itself, or an API client`;


const targetStates = async () => (await supertest(m.app).get(`/api/operations/${operationId}`).set('Authorization', BASIC).expect(200)).body.targets.map((t: { state: string }) => t.state) as string[];
const productInfo = async () => (await supertest(m.app).get('/api/master').set('Authorization', BASIC).expect(200)).body as { product: string; version: string };
const packageIds = async () => (await supertest(m.app).get('/api/packages').set('Authorization', BASIC).expect(200)).body.map((p: { id: number }) => p.id) as number[];
const enrollHash = () => m.db.get<{ value: string }>("SELECT value FROM settings WHERE key = 'enroll_token_hash'");

/** A request of the given kind with the admin's Basic credentials, as a browser that cached them sends it. */
function send(method: string, route: string, headers: Record<string, string>, body?: string): Promise<RawResponse> {
  return rawRequest(`${served.url}${route}`, { method, headers: { authorization: BASIC, ...headers }, body });
}

function assertRefused(res: RawResponse, evidence: string): void {
  assert.equal(res.status, 403, res.body.slice(0, 300));
  const message = refusal(evidence);
  if (String(res.headers['content-type']).startsWith('application/json')) assert.deepEqual(JSON.parse(res.body), { error: message });
  else assert.ok(res.body.includes(message.replace(/"/g, '&#34;')), res.body.slice(0, 600));
}

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
  ({ m, packageId, operationId } = await masterWithWaitingOperation(work, pki, 'Update 0'));
  served = await listenMaster(m);
});
after(async () => {
  await served?.close();
  await m?.cleanup();
  await cleanup();
});

describe('state-changing requests from another site', () => {
  it('refuses them with HTTP Basic credentials, whatever the route, and changes nothing', async () => {
    const cross = { origin: EVIL };
    const before = { states: await targetStates(), product: await productInfo(), packages: await packageIds(), enroll: await enrollHash() };
    assert.deepEqual(before.states, ['pending']);

    assertRefused(await send('POST', `/api/operations/${operationId}/cancel`, cross), `Origin: ${EVIL}`);
    assertRefused(await send('POST', `/operations/${operationId}/cancel`, { 'sec-fetch-site': 'cross-site', accept: 'text/html' }), 'Sec-Fetch-Site: cross-site');
    assertRefused(await send('POST', `/api/operations/${operationId}/retry`, cross), `Origin: ${EVIL}`);
    assertRefused(await send('DELETE', `/api/packages/${packageId}`, cross), `Origin: ${EVIL}`);
    assertRefused(await send('POST', `/updates/${packageId}/delete`, { ...cross, 'sec-fetch-site': 'cross-site', accept: 'text/html', 'content-type': 'application/x-www-form-urlencoded' }, ''), `Origin: ${EVIL}`);
    assertRefused(await send('PUT', '/api/master', { ...cross, 'content-type': 'application/json' }, JSON.stringify({ product: 'watchdoc', version: '9.9.9' })), `Origin: ${EVIL}`);
    const formHeaders = { ...cross, accept: 'text/html', 'content-type': 'application/x-www-form-urlencoded' };
    assertRefused(await send('POST', '/settings/product', formHeaders, form({ product: 'evil', version: '9.9.9' })), `Origin: ${EVIL}`);
    assertRefused(await send('POST', '/settings/enroll-token', formHeaders, ''), `Origin: ${EVIL}`);
    assertRefused(await send('POST', '/settings/password', formHeaders, form({ current: ADMIN_PASSWORD, next: 'attacker chosen password', confirm: 'attacker chosen password' })), `Origin: ${EVIL}`);
    assertRefused(await send('POST', '/api/operations', { ...cross, 'content-type': 'application/json' }, JSON.stringify({ action: 'apply', package: packageId, servers: 'all' })), `Origin: ${EVIL}`);
    assertRefused(await send('DELETE', '/api/servers/1', cross), `Origin: ${EVIL}`);
    const upload = Buffer.concat([Buffer.from(multipartHead('Planted')), Buffer.from('not a package'), Buffer.from(multipartTail)]).toString('latin1');
    assertRefused(await send('POST', '/api/packages', { ...cross, 'content-type': `multipart/form-data; boundary=${BOUNDARY}` }, upload), `Origin: ${EVIL}`);

    assert.deepEqual(await targetStates(), before.states, 'the operation was not cancelled');
    assert.deepEqual(await productInfo(), before.product);
    assert.deepEqual(await packageIds(), before.packages);
    assert.deepEqual(await enrollHash(), before.enroll);
    assert.equal((await supertest(m.app).get('/api/servers').set('Authorization', BASIC).expect(200)).body.length, 2, 'the slave is still there');
    assert.deepEqual(await readdir(m.store.tmpDir), [], 'no upload left behind');
    const basicStillWorks = await send('GET', '/api/servers', {});
    assert.equal(basicStillWorks.status, 200, 'the password was not changed');
  });

  it('counts another port of the same host, a same-site page and an opaque origin as other sites', async () => {
    const port = new URL(served.url).port;
    const otherPort = `http://127.0.0.1:${Number(port) + 1}`;
    assertRefused(await send('POST', `/api/operations/${operationId}/cancel`, { origin: otherPort, 'sec-fetch-site': 'same-site' }), `Origin: ${otherPort}`);
    assertRefused(await send('POST', `/api/operations/${operationId}/cancel`, { 'sec-fetch-site': 'same-site' }), 'Sec-Fetch-Site: same-site');
    assertRefused(await send('POST', `/api/operations/${operationId}/cancel`, { origin: 'null' }), 'Origin: null');
    assertRefused(await send('POST', `/api/operations/${operationId}/cancel`, { origin: `https://127.0.0.1:${port}` }), `Origin: https://127.0.0.1:${port}`);
    assert.deepEqual(await targetStates(), ['pending']);
  });

  it('refuses a cross-site login and logout', async () => {
    const page = await rawRequest(`${served.url}/login`);
    const cookie = cookiesOf(page);
    const token = csrfOf(page.body);
    const login = await rawRequest(`${served.url}/login`, { method: 'POST', headers: { cookie, origin: EVIL, accept: 'text/html', 'content-type': 'application/x-www-form-urlencoded' }, body: form({ _csrf: 'x', username: 'admin', password: ADMIN_PASSWORD }) });
    assertRefused(login, `Origin: ${EVIL}`);
    assert.equal(login.headers['set-cookie'], undefined, 'no session was opened');
    // The real form, same origin, still logs in.
    const ok = await rawRequest(`${served.url}/login`, { method: 'POST', headers: { cookie, origin: served.url, 'sec-fetch-site': 'same-origin', 'content-type': 'application/x-www-form-urlencoded' }, body: form({ _csrf: token, username: 'admin', password: ADMIN_PASSWORD }) });
    assert.equal(ok.status, 303);
  });

  it('still serves the console itself, API clients without browser headers, and a session with its token', async () => {
    const own = { origin: served.url, 'sec-fetch-site': 'same-origin' };
    const put = await send('PUT', '/api/master', { ...own, 'content-type': 'application/json' }, JSON.stringify({ product: 'watchdoc', version: '2.0.0' }));
    assert.equal(put.status, 200, put.body);
    const curl = await send('PUT', '/api/master', { 'content-type': 'application/json' }, JSON.stringify({ product: 'watchdoc', version: '2.0.1' }));
    assert.equal(curl.status, 200, curl.body);
    assert.deepEqual(await productInfo(), { product: 'watchdoc', version: '2.0.1' });
    // The Host header names the master however the browser reached it (localhost, another name).
    const byName = await send('PUT', '/api/master', { ...own, origin: `http://localhost:${new URL(served.url).port}`, host: `localhost:${new URL(served.url).port}`, 'content-type': 'application/json' }, JSON.stringify({ product: 'watchdoc', version: '2.0.2' }));
    assert.equal(byName.status, 200, byName.body);
    // A user typing the address (Sec-Fetch-Site: none) is not another site.
    const typed = await send('PUT', '/api/master', { 'sec-fetch-site': 'none', 'content-type': 'application/json' }, JSON.stringify({ product: 'watchdoc', version: '2.0.3' }));
    assert.equal(typed.status, 200, typed.body);

    // Behind a proxy that rewrites the origin, the console still works: its forms carry the token.
    const { agent, csrf } = await loginAgent(m.app);
    await agent.post('/settings/product').set('Origin', 'https://proxy.example').type('form').send({ _csrf: csrf, product: 'watchdoc', version: '2.1.0' }).expect(200);
    const noToken = await agent.post('/settings/product').set('Origin', 'https://proxy.example').set('Accept', 'application/json').type('form').send({ product: 'watchdoc', version: '2.2.0' }).expect(403);
    assert.deepEqual(noToken.body, { error: refusal('Origin: https://proxy.example') });
    assert.deepEqual(await productInfo(), { product: 'watchdoc', version: '2.1.0' });

    const cancelled = await send('POST', `/api/operations/${operationId}/cancel`, own);
    assert.equal(cancelled.status, 200, cancelled.body);
    assert.deepEqual(await targetStates(), ['cancelled']);
  });
});
