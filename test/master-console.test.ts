import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { makePackage } from './helpers/openssl-package.js';
import { ServersRepo } from '../server/db/servers-repo.js';
import { SimulatedAgent } from './helpers/simulated-agent.js';
import { ADMIN_PASSWORD, BASIC, createTestMaster, csrfOf, listenMaster, loginAgent } from './helpers/master.js';
import { tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let payloadDir: string;
let m: Awaited<ReturnType<typeof createTestMaster>>;
let counter = 0;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
  payloadDir = path.join(work, 'payload');
  await mkdir(payloadDir);
  await writeFile(path.join(payloadDir, 'watchdoc.conf'), 'release\n');
  m = await createTestMaster(pki.root, { loginAttemptsPerWindow: 4 });
});
after(async () => {
  await m.cleanup();
  await cleanup();
});

const pkg = (publisher = pki.good.rsa) => makePackage(work, `c${++counter}`, { publisher, payloadDir, version: `6.3.${counter}` });

describe('login and sessions', () => {
  it('sends a browser without a session to the login page', async () => {
    const res = await supertest(m.app).get('/updates').set('Accept', 'text/html').expect(303);
    assert.equal(res.headers.location, '/login?next=%2Fupdates');
  });

  it('serves /health and the login page without authentication', async () => {
    const health = await supertest(m.app).get('/health').expect(200);
    assert.deepEqual(health.body, { status: 'ok', database: true, store: true });
    const login = await supertest(m.app).get('/login').expect(200);
    assert.match(login.text, /<form class="stack" method="post" action="\/login">/);
  });

  it('logs in with a fresh HttpOnly, SameSite=Strict cookie', async () => {
    const agent = supertest.agent(m.app);
    const page = await agent.get('/login').expect(200);
    assert.doesNotMatch(String(page.headers['set-cookie']), /propagator_session/, 'no session before login');
    const res = await agent.post('/login').type('form').send({ _csrf: csrfOf(page.text), username: 'admin', password: ADMIN_PASSWORD, next: '/updates' }).expect(303);
    assert.equal(res.headers.location, '/updates');
    const cookie = (res.headers['set-cookie'] as unknown as string[]).find((c) => c.startsWith('propagator_session=')) ?? '';
    assert.match(cookie, /^propagator_session=[^;]+; Max-Age=43200; Path=\/; Expires=[^;]+; HttpOnly; SameSite=Strict$/);
    const rows = await m.db.all<{ id_hash: string }>('SELECT id_hash FROM sessions');
    assert.ok(rows.every((r) => !cookie.includes(r.id_hash)), 'only a hash of the session id is stored');
    await agent.get('/updates').expect(200);
  });

  it('drops expired sessions as new ones are made, not only when the master starts', async () => {
    await m.db.run("INSERT INTO sessions (id_hash, csrf_token, username, created_at, expires_at) VALUES ('expired-hash', 'x', 'admin', '2026-01-01T00:00:00.000Z', '2026-01-01T12:00:00.000Z')");
    await m.db.run("INSERT INTO sessions (id_hash, csrf_token, username, created_at, expires_at) VALUES ('live-hash', 'x', 'admin', '2026-01-01T00:00:00.000Z', '2999-01-01T00:00:00.000Z')");
    await loginAgent(m.app);
    const left = (await m.db.all<{ id_hash: string }>("SELECT id_hash FROM sessions WHERE id_hash IN ('expired-hash', 'live-hash')")).map((r) => r.id_hash);
    assert.deepEqual(left, ['live-hash']);
    await m.db.run("DELETE FROM sessions WHERE id_hash = 'live-hash'");
  });

  it('refuses a login without the CSRF token, and a wrong password', async () => {
    const agent = supertest.agent(m.app);
    await agent.get('/login').expect(200);
    const noToken = await agent.post('/login').type('form').set('Accept', 'text/html').send({ username: 'admin', password: ADMIN_PASSWORD }).expect(403);
    assert.match(noToken.text, /CSRF token missing or wrong/);
    const page = await agent.get('/login');
    const wrong = await agent.post('/login').type('form').send({ _csrf: csrfOf(page.text), username: 'admin', password: 'nope' }).expect(401);
    assert.match(wrong.text, /Wrong user name or password/);
    assert.ok(!m.logs.some((l) => l.includes(ADMIN_PASSWORD)), 'no password in the logs');
  });

  it('never redirects to another site after login', async () => {
    const agent = supertest.agent(m.app);
    const page = await agent.get('/login');
    const res = await agent.post('/login').type('form').send({ _csrf: csrfOf(page.text), username: 'admin', password: ADMIN_PASSWORD, next: '//evil.example/x' }).expect(303);
    assert.equal(res.headers.location, '/servers');
  });

  it('logs out', async () => {
    const { agent, csrf } = await loginAgent(m.app);
    await agent.post('/logout').type('form').send({ _csrf: csrf }).expect(303);
    await agent.get('/servers').set('Accept', 'text/html').expect(303);
  });
});

describe('console pages', () => {
  it('shows the master first in Print servers, with the parity banner', async () => {
    const { agent } = await loginAgent(m.app);
    const page = await agent.get('/servers').expect(200);
    assert.match(page.text, /<td><span class="badge" title="Master">M<\/span><\/td>\s*<td class="name">master-test<\/td>/);
    assert.match(page.text, /No slave server has enrolled yet\. The master runs watchdoc 1\.0\.0\./);
    const api = await supertest(m.app).get('/api/servers').set('Authorization', BASIC).expect(200);
    assert.deepEqual(api.body.map((s: { role: string; name: string; status: string; version: string; mode: null }) => [s.role, s.name, s.status, s.version, s.mode]),
      [['master', 'master-test', 'online', '1.0.0', null]]);
  });

  it('adds an update from the form without JavaScript: green tick, or the red reason', async () => {
    const { agent, csrf } = await loginAgent(m.app);
    const form = await agent.get('/updates/new').expect(200);
    assert.match(form.text, /action="\/updates\?_csrf=/);
    const ok = await agent.post(`/updates?_csrf=${encodeURIComponent(csrf)}`).set('Accept', 'text/html').field('name', 'Form upload').attach('package', await pkg()).expect(201);
    assert.match(ok.text, /class="verdict ok"[^>]*>\s*✔ The update package “Form upload” is valid: watchdoc 6\.3\.\d+, signed by CN=Test Publisher signer\./);
    const bad = await agent.post(`/updates?_csrf=${encodeURIComponent(csrf)}`).set('Accept', 'text/html').field('name', 'Bad form upload').attach('package', await pkg(pki.bad.selfsigned)).expect(422);
    assert.match(bad.text, /class="verdict bad"[^>]*>\s*\s*✖ This update package is not secure: the signer certificate &#34;CN=Test Publisher selfsigned&#34; is self-signed and not in the trust store/);
    const list = await agent.get('/updates').expect(200);
    assert.match(list.text, /<td class="name">Form upload<\/td>\s*<td><span class="badge ok">✔ Valid<\/span><\/td>/);
    assert.doesNotMatch(list.text, /Bad form upload/);
  });

  it('answers the page script (XHR) in JSON, with the token in a header', async () => {
    const { agent, csrf } = await loginAgent(m.app);
    const res = await agent.post('/updates').set('Accept', 'application/json').set('X-CSRF-Token', csrf).field('name', 'XHR upload').attach('package', await pkg()).expect(201);
    assert.equal(res.body.name, 'XHR upload');
    const refused = await agent.post('/updates').set('Accept', 'application/json').set('X-CSRF-Token', csrf).field('name', 'XHR bad').attach('package', await pkg(pki.bad.noeku)).expect(422);
    assert.deepEqual(refused.body, { error: 'This update package is not secure: the signer certificate is not a code-signing certificate (no codeSigning extended key usage)' });
  });

  it('refuses a form without its CSRF token and stores nothing', async () => {
    const { agent } = await loginAgent(m.app);
    const before = (await readdir(m.store.packagesDir)).length;
    const res = await agent.post('/updates').set('Accept', 'text/html').field('name', 'No token').attach('package', await pkg()).expect(403);
    assert.match(res.text, /This form has expired or did not come from this console/);
    assert.equal((await readdir(m.store.packagesDir)).length, before);
    await agent.post('/updates/1/delete').type('form').send({}).expect(403);
  });

  it('deletes an update from the Updates page', async () => {
    const { agent, csrf } = await loginAgent(m.app);
    const created = await agent.post('/updates').set('Accept', 'application/json').set('X-CSRF-Token', csrf).field('name', 'Delete me').attach('package', await pkg()).expect(201);
    const res = await agent.post(`/updates/${created.body.id}/delete`).type('form').send({ _csrf: csrf }).expect(303);
    assert.equal(res.headers.location, '/updates?deleted=Delete%20me');
    assert.match((await agent.get(res.headers.location)).text, /Deleted the update “Delete me”/);
  });

  it('renders every page for an admin using HTTP Basic (no session)', async () => {
    for (const route of ['/servers', '/updates', '/updates/new', '/propagate', '/apply', '/operations', '/settings']) {
      const res = await supertest(m.app).get(route).set('Authorization', BASIC).set('Accept', 'text/html');
      assert.equal(res.status, 200, `${route}: ${res.text.slice(0, 200)}`);
    }
  });

  it('renders errors as pages for browsers and JSON for the API', async () => {
    const { agent } = await loginAgent(m.app);
    const page = await agent.get('/no/such/page').set('Accept', 'text/html').expect(404);
    assert.match(page.text, /<h1>Not found<\/h1>/);
    const api = await agent.get('/api/nothing').expect(404);
    assert.deepEqual(api.body, { error: 'There is no page /api/nothing' });
  });
});

describe('settings', () => {
  it('changes the master product version (console and API) and validates it', async () => {
    const { agent, csrf } = await loginAgent(m.app);
    const saved = await agent.post('/settings/product').type('form').send({ _csrf: csrf, product: 'watchdoc', version: '6.3' }).expect(200);
    assert.match(saved.text, /The master now runs watchdoc 6\.3/);
    const bad = await agent.post('/settings/product').type('form').send({ _csrf: csrf, product: 'watchdoc', version: 'latest' }).expect(422);
    assert.match(bad.text, /The version must be 1 to 4 dot-separated numbers/);
    await supertest(m.app).put('/api/master').set('Authorization', BASIC).send({ product: 'watchdoc', version: '6.4.1' }).expect(200, { product: 'watchdoc', version: '6.4.1' });
    const servers = await supertest(m.app).get('/api/servers').set('Authorization', BASIC).expect(200);
    assert.equal(servers.body[0].version, '6.4.1');
  });

  it('shows a new enrollment token once and stores only its hash', async () => {
    const { agent, csrf } = await loginAgent(m.app);
    const res = await agent.post('/settings/enroll-token').type('form').send({ _csrf: csrf }).expect(200);
    const token = /<code id="enroll-token">([^<]+)<\/code>/.exec(res.text)?.[1];
    assert.ok(token && token.length >= 30);
    const stored = await m.db.all<{ value: string }>('SELECT value FROM settings');
    assert.ok(stored.every((r) => !r.value.includes(token)), 'the token is not stored in clear');
    assert.equal(await m.services.settings.enrollTokenMatches(token), true);
    assert.doesNotMatch((await agent.get('/settings')).text, new RegExp(token));
  });

  it('changes the admin password only with the current one', async () => {
    const other = await createTestMaster(pki.root);
    try {
      const { agent, csrf } = await loginAgent(other.app);
      const wrong = await agent.post('/settings/password').type('form').send({ _csrf: csrf, current: 'nope', next: 'a new long password', confirm: 'a new long password' }).expect(422);
      assert.match(wrong.text, /The current password is wrong/);
      const short = await agent.post('/settings/password').type('form').send({ _csrf: csrf, current: ADMIN_PASSWORD, next: 'short', confirm: 'short' }).expect(422);
      assert.match(short.text, /at least 12 characters/);
      await agent.post('/settings/password').type('form').send({ _csrf: csrf, current: ADMIN_PASSWORD, next: 'a new long password', confirm: 'a new long password' }).expect(200);
      await loginAgent(other.app, 'a new long password');
      await supertest(other.app).get('/api/servers').set('Authorization', BASIC).expect(401);
    } finally {
      await other.cleanup();
    }
  });
});

describe('rate limits', () => {
  it('never counts successful requests, however many run at once', async () => {
    const busy = await createTestMaster(pki.root, { loginAttemptsPerWindow: 3, enrollToken: 'busy-enrollment-token-0123456789', autoAccept: true });
    try {
      await busy.services.settings.init({ product: null, productVersion: null, enrollToken: 'busy-enrollment-token-0123456789' });
      const served = await listenMaster(busy);
      try {
        const enroll = (i: number, token: string) => new SimulatedAgent(served.url, `burst-${i}`).enroll(token);
        const burst = await Promise.all(Array.from({ length: 40 }, (_, i) => enroll(i, 'busy-enrollment-token-0123456789')));
        assert.deepEqual([...new Set(burst.map((r) => r.status))], [201]);
        const api = await Promise.all(Array.from({ length: 40 }, () => fetch(`${served.url}/api/servers`, { headers: { authorization: BASIC } })));
        assert.deepEqual([...new Set(api.map((r) => r.status))], [200]);
        for (let i = 0; i < 3; i++) assert.equal((await enroll(100, 'wrong-token')).status, 401);
        const blocked = await enroll(100, 'wrong-token');
        assert.equal(blocked.status, 429);
        assert.deepEqual(blocked.body, { error: 'Too many failed enrollments from this address; wait 15 minutes and try again' });
        assert.match(blocked.headers.get('retry-after') ?? '', /^\d+$/);
      } finally {
        await served.close();
      }
    } finally {
      await busy.cleanup();
    }
  });

  it('stops password guessing after a few failures', async () => {
    const limited = await createTestMaster(pki.root, { loginAttemptsPerWindow: 3 });
    try {
      const agent = supertest.agent(limited.app);
      const page = await agent.get('/login');
      const attempt = () => agent.post('/login').type('form').set('Accept', 'text/html').send({ _csrf: csrfOf(page.text), username: 'admin', password: 'guess' });
      for (let i = 0; i < 3; i++) await attempt().expect(401);
      const blocked = await attempt().expect(429);
      assert.match(blocked.text, /Too many failed logins from this address \(3 in 15 minutes\); wait 15 minutes and try again/);
      const basic = `Basic ${Buffer.from('admin:guess').toString('base64')}`;
      for (let i = 0; i < 9; i++) await supertest(limited.app).get('/api/packages').set('Authorization', basic).expect(401);
      const api = await supertest(limited.app).get('/api/packages').set('Authorization', basic).expect(429);
      assert.deepEqual(api.body, { error: 'Too many failed authentications from this address (9 in 15 minutes); wait 15 minutes and try again' });
    } finally {
      await limited.cleanup();
    }
  });
});

describe('propagation rules on the Updates page', () => {
  it('says when the master must be updated first, or the product differs', async () => {
    const other = await createTestMaster(pki.root, { productVersion: '6.0' });
    try {
      const { agent, csrf } = await loginAgent(other.app);
      const newer = await makePackage(work, 'rule-newer', { publisher: pki.good.rsa, payloadDir, version: '6.1' });
      const older = await makePackage(work, 'rule-older', { publisher: pki.good.rsa, payloadDir, version: '5.9' });
      const otherProduct = await makePackage(work, 'rule-product', { publisher: pki.good.rsa, payloadDir, version: '1.0', product: 'printgate' });
      for (const [name, file] of [['Newer', newer], ['Older', older], ['Other product', otherProduct]] as const) {
        await agent.post('/updates').set('Accept', 'application/json').set('X-CSRF-Token', csrf).field('name', name).attach('package', file).expect(201);
      }
      const page = (await agent.get('/updates').expect(200)).text;
      assert.match(page, /<td class="name">Newer<\/td>[\s\S]*?⚠ Update the master to 6\.1 first \(it runs 6\.0\)/);
      assert.match(page, /<td class="name">Older<\/td>[\s\S]*?<span class="ok">Ready<\/span>/);
      assert.match(page, /<td class="name">Other product<\/td>[\s\S]*?⚠ This package is for printgate; the master runs watchdoc/);
    } finally {
      await other.cleanup();
    }
  });
});

describe('a domain of 1,000 servers', () => {
  it('pages and searches Print servers, and pages an operation report', async () => {
    const big = await createTestMaster(pki.root);
    try {
      await big.db.transaction(async (tx) => {
        const repo = new ServersRepo(tx);
        for (let i = 1; i <= 1000; i++) {
          const name = `print-${String(i).padStart(4, '0')}`;
          await repo.admit({ name, mode: i % 3 === 0 ? 'bidirectional' : 'mailbox', address: i % 3 === 0 ? `http://127.0.0.1:${20000 + i}` : null,
            product: 'watchdoc', version: i % 10 === 0 ? '6.0.0' : '1.0.0', publicKey: 'test', keyFingerprint: `SHA256:${name}`, requestedFrom: null, acceptedBy: 'test', enrolledAt: new Date().toISOString(), at: new Date().toISOString() });
        }
      });
      const { agent } = await loginAgent(big.app);
      const first = await agent.get('/servers').expect(200);
      assert.equal((first.text.match(/<tr data-server-id=/g) ?? []).length, 100);
      assert.match(first.text, /Page 1 of 11 \(1001 servers\)/);
      assert.match(first.text, /✖ 100 of 1000 slave servers do not run watchdoc 1\.0\.0, the master's version: print-0010 \(6\.0\.0\), [^<]*, and 80 more\./);
      const last = await agent.get('/servers?page=11').expect(200);
      assert.equal((last.text.match(/<tr data-server-id=/g) ?? []).length, 1);
      const found = await agent.get('/servers?q=print-0777').expect(200);
      assert.deepEqual([...found.text.matchAll(/<td class="name">([^<]+)<\/td>/g)].map((m) => m[1]), ['print-0777']);
      assert.match(found.text, /1 servers matching “print-0777”/);

      const pkg = await makePackage(work, 'thousand', { publisher: pki.good.rsa, payloadDir, version: '1.0.0' });
      const pkgId = (await supertest(big.app).post('/api/packages').set('Authorization', BASIC).field('name', 'Thousand').attach('package', pkg).expect(201)).body.id as number;
      const op = await supertest(big.app).post('/api/operations').set('Authorization', BASIC).send({ action: 'propagate', package: pkgId, servers: 'all' }).expect(202);
      const report = await agent.get(`/operations/${op.body.id}`).expect(200);
      assert.equal((report.text.match(/<tr data-server=/g) ?? []).length, 100);
      assert.match(report.text, /Page 1 of 10 \(1000 targets\)/);
      assert.match(report.text, /Total: 1000/);
      const pending = await agent.get(`/operations/${op.body.id}?target=pending&q=print-099`).expect(200);
      assert.equal((pending.text.match(/<tr data-server=/g) ?? []).length, 10);
      const json = await supertest(big.app).get(`/api/operations/${op.body.id}`).set('Authorization', BASIC).expect(200);
      assert.equal(json.body.targets.length, 1000);
    } finally {
      await big.cleanup();
    }
  });
});
