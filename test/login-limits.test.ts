import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { addressKey } from '../server/services/login-throttle.js';
import { csrfOf, ADMIN_PASSWORD } from './helpers/master.js';
import { startMasterProcess, waitFor, type MasterProcess } from './helpers/master-process.js';
import { basic, cookiesOf, form, rawRequest, type RawResponse } from './helpers/http-request.js';
import { tempDir } from './helpers/run.js';

// Password guessing against a real master process, from several client addresses: Linux routes the
// whole of 127.0.0.0/8 to the loopback interface, so a client socket bound to 127.0.0.2 is, for the
// master, another machine. The limits are the defaults: per address 10 logins and 30 Basic checks,
// per user name 50, each per 15 minutes.

let work: string;
let cleanup: () => Promise<void>;
const masters: MasterProcess[] = [];

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
});
after(async () => {
  for (const m of masters) await m.stop();
  await cleanup();
});

async function start(name: string): Promise<MasterProcess> {
  const master = await startMasterProcess(['--data', path.join(work, name), '--trust', path.join(work, 'no-trust')], { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD });
  masters.push(master);
  return master;
}

const ADDRESS_LOGINS = 'Too many failed logins from this address (10 in 15 minutes); wait 15 minutes and try again';
const ADDRESS_BASIC = 'Too many failed authentications from this address (30 in 15 minutes); wait 15 minutes and try again';
const PER_USER = 'Too many failed logins as "admin" from all addresses together (50 in 15 minutes), which looks like password guessing; wait 15 minutes, or log in from a browser or an address that logged in before';

/** A browser at `localAddress` opens the login page: its cookie and the form's token. */
async function openLogin(url: string, localAddress: string, cookie = ''): Promise<{ cookie: string; token: string }> {
  const page = await rawRequest(`${url}/login`, { localAddress, headers: cookie ? { cookie } : {} });
  assert.equal(page.status, 200);
  return { cookie: cookiesOf(page, cookie), token: csrfOf(page.body) };
}

function postLogin(url: string, localAddress: string, browser: { cookie: string; token: string }, password: string): Promise<RawResponse> {
  return rawRequest(`${url}/login`, {
    method: 'POST',
    localAddress,
    headers: { cookie: browser.cookie, accept: 'application/json', 'content-type': 'application/x-www-form-urlencoded' },
    body: form({ _csrf: browser.token, username: 'admin', password }),
  });
}

const apiCall = (url: string, localAddress: string, password: string, cookie = '') =>
  rawRequest(`${url}/api/servers`, { localAddress, headers: { authorization: basic('admin', password), ...(cookie ? { cookie } : {}) } });

const statuses = (answers: RawResponse[]) => answers.reduce<Record<number, number>>((count, r) => ({ ...count, [r.status]: (count[r.status] ?? 0) + 1 }), {});
const logLines = (master: MasterProcess, text: string) => master.stdout().split('\n').filter((l) => l.includes(text));
const requestLines = (master: MasterProcess, method: string, route: string) => logLines(master, `"msg":"request","method":"${method}","path":"${route}"`).length;

function assertRefused(answers: RawResponse[], message: string): void {
  for (const r of answers) {
    assert.equal(r.status, 429);
    assert.deepEqual(JSON.parse(r.body), { error: message });
    const wait = Number(r.headers['retry-after']);
    assert.ok(Number.isInteger(wait) && wait > 800 && wait <= 900, `Retry-After: ${r.headers['retry-after']}`);
  }
}

describe('password guessing on the login form', () => {
  it('checks 10 of 300 simultaneous guesses from one address, and the admin at another address still logs in', async () => {
    const master = await start('form');
    const stranger = await openLogin(master.url, '127.0.0.1');
    const answers = await Promise.all(Array.from({ length: 300 }, (_, i) => postLogin(master.url, '127.0.0.1', stranger, `guess number ${i}`)));
    assert.deepEqual(statuses(answers), { 401: 10, 429: 290 });
    assertRefused(answers.filter((r) => r.status === 429), ADDRESS_LOGINS);
    await waitFor(async () => requestLines(master, 'POST', '/login') === 300, 10_000, 'the request log');
    assert.equal(logLines(master, '"msg":"login failed').length, 10, 'ten passwords checked');
    // The right password from the locked-out address waits too: the address, not the guess, is limited.
    assertRefused([await postLogin(master.url, '127.0.0.1', stranger, ADMIN_PASSWORD)], ADDRESS_LOGINS);

    const admin = await openLogin(master.url, '127.0.0.2');
    const login = await postLogin(master.url, '127.0.0.2', admin, ADMIN_PASSWORD);
    assert.equal(login.status, 303, login.body);
    assert.match(String(login.headers['set-cookie']), /propagator_session=/);
  });

  it('stops a guesser spread over many addresses at 50 guesses, but not the admin with a known-device cookie or from a known address', async () => {
    const master = await start('distributed');
    // The admin logged in from this browser (at 127.0.0.9) last week: it keeps a known-device cookie.
    const adminBrowser = await openLogin(master.url, '127.0.0.9');
    const first = await postLogin(master.url, '127.0.0.9', adminBrowser, ADMIN_PASSWORD);
    assert.equal(first.status, 303);
    const device = cookiesOf(first).split('; ').find((c) => c.startsWith('propagator_device='));
    assert.ok(device, 'a known-device cookie at login');
    assert.match(first.headers['set-cookie']?.find((c) => c.startsWith('propagator_device=')) ?? '', /; Max-Age=2592000; Path=\/; Expires=[^;]+; HttpOnly; SameSite=Strict$/);

    // Six addresses, ten guesses each, all at once: each address is within its own limit.
    const guessers = ['127.0.0.11', '127.0.0.12', '127.0.0.13', '127.0.0.14', '127.0.0.15', '127.0.0.16'];
    const forms = await Promise.all(guessers.map((address) => openLogin(master.url, address)));
    const answers = (await Promise.all(guessers.map((address, g) => Promise.all(Array.from({ length: 10 }, (_, i) => postLogin(master.url, address, forms[g] as { cookie: string; token: string }, `guess ${g}-${i}`)))))).flat();
    assert.deepEqual(statuses(answers), { 401: 50, 429: 10 });
    assertRefused(answers.filter((r) => r.status === 429), PER_USER);
    await waitFor(async () => requestLines(master, 'POST', '/login') === 61, 10_000, 'the request log');
    assert.equal(logLines(master, '"msg":"login failed').length, 50);

    // A seventh address, even with the right password, waits: the account is under attack.
    const newcomer = await openLogin(master.url, '127.0.0.20');
    assertRefused([await postLogin(master.url, '127.0.0.20', newcomer, ADMIN_PASSWORD)], PER_USER);
    // A forged known-device cookie is worth nothing.
    const forged = { ...newcomer, cookie: `${newcomer.cookie}; propagator_device=YWRtaW4.${Date.now() + 1e9}.${'A'.repeat(43)}` };
    assertRefused([await postLogin(master.url, '127.0.0.20', forged, ADMIN_PASSWORD)], PER_USER);
    // The admin's laptop, on a new network (another address), shows its cookie and gets in.
    const laptop = await openLogin(master.url, '127.0.0.20', device);
    const fromLaptop = await postLogin(master.url, '127.0.0.20', laptop, ADMIN_PASSWORD);
    assert.equal(fromLaptop.status, 303, fromLaptop.body);
    // The admin's office address logged in before: a browser there without the cookie gets in too.
    const office = await openLogin(master.url, '127.0.0.9');
    assert.equal((await postLogin(master.url, '127.0.0.9', office, ADMIN_PASSWORD)).status, 303);
    // A guesser at yet another address is still stopped.
    assertRefused([await postLogin(master.url, '127.0.0.21', await openLogin(master.url, '127.0.0.21'), 'guess')], PER_USER);
  });
});

describe('password guessing with HTTP Basic on the API', () => {
  it('checks 30 of 300 simultaneous guesses from one address, and the admin at another address still gets in', async () => {
    const master = await start('basic');
    const answers = await Promise.all(Array.from({ length: 300 }, (_, i) => apiCall(master.url, '127.0.0.1', `guess number ${i}`)));
    assert.deepEqual(statuses(answers), { 401: 30, 429: 270 });
    assertRefused(answers.filter((r) => r.status === 429), ADDRESS_BASIC);
    await waitFor(async () => requestLines(master, 'GET', '/api/servers') === 300, 10_000, 'the request log');
    assert.equal(logLines(master, '"msg":"HTTP Basic authentication failed').length, 30);
    assertRefused([await apiCall(master.url, '127.0.0.1', ADMIN_PASSWORD)], ADDRESS_BASIC);
    assert.equal((await apiCall(master.url, '127.0.0.2', ADMIN_PASSWORD)).status, 200);
  });

  it('stops a guesser spread over many addresses, but not the admin with a known-device cookie', async () => {
    const master = await start('basic-distributed');
    const adminBrowser = await openLogin(master.url, '127.0.0.9');
    const device = cookiesOf(await postLogin(master.url, '127.0.0.9', adminBrowser, ADMIN_PASSWORD)).split('; ').find((c) => c.startsWith('propagator_device='));
    assert.ok(device);

    const guessers = ['127.0.0.11', '127.0.0.12'];
    const answers = (await Promise.all(guessers.map((address, g) => Promise.all(Array.from({ length: 30 }, (_, i) => apiCall(master.url, address, `guess ${g}-${i}`)))))).flat();
    assert.deepEqual(statuses(answers), { 401: 50, 429: 10 });
    assertRefused(answers.filter((r) => r.status === 429), PER_USER);
    assertRefused([await apiCall(master.url, '127.0.0.20', ADMIN_PASSWORD)], PER_USER);
    const withCookie = await apiCall(master.url, '127.0.0.20', ADMIN_PASSWORD, device);
    assert.equal(withCookie.status, 200, withCookie.body);
  });
});

describe('the address a limit counts', () => {
  it('is the IPv4 address, or the /64 network of an IPv6 one', () => {
    assert.equal(addressKey('127.0.0.2'), '127.0.0.2');
    assert.equal(addressKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(addressKey('2001:db8:0:1:aaaa:bbbb:cccc:dddd'), '2001:db8:0:1::/64');
    assert.equal(addressKey('2001:db8:0:1::dddd'), '2001:db8:0:1::/64');
    assert.equal(addressKey('2001:0db8::1'), '2001:db8:0:0::/64');
    assert.equal(addressKey('::1'), '0:0:0:0::/64');
    assert.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
  });
});
