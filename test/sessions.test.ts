import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { deriveKey } from '../server/derived-keys.js';
import { ADMIN_PASSWORD, BASIC, createTestMaster, csrfOf, loginAgent, openMaster, type TestMaster } from './helpers/master.js';
import { tempDir } from './helpers/run.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
});
after(() => cleanup());

const CSRF_MESSAGE = 'This form has expired or did not come from this console (CSRF token missing or wrong); reload the page and try again';
const sessionCount = async (m: { db: { get<T>(sql: string): Promise<T | undefined> } }) => (await m.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM sessions'))?.n;

describe('the login page', () => {
  it('stores nothing for visitors who do not log in', async () => {
    const m = await createTestMaster(pki.root);
    try {
      for (let i = 0; i < 300; i++) await supertest(m.app).get('/login').expect(200);
      const agent = supertest.agent(m.app);
      for (let i = 0; i < 5; i++) {
        const page = await agent.get('/login').expect(200);
        await agent.post('/login').type('form').send({ _csrf: csrfOf(page.text), username: 'admin', password: `guess ${i}` }).expect(401);
      }
      assert.equal(await sessionCount(m), 0, 'no session row without a login');

      const page = await agent.get('/login').expect(200);
      await agent.post('/login').type('form').send({ _csrf: csrfOf(page.text), username: 'admin', password: ADMIN_PASSWORD }).expect(303);
      assert.deepEqual(await m.db.all('SELECT username FROM sessions'), [{ username: 'admin' }]);
      await agent.get('/servers').expect(200);
    } finally {
      await m.cleanup();
    }
  });

  it('refuses a login without its form token, with the token of another browser, or a forged one', async () => {
    const m = await createTestMaster(pki.root);
    try {
      const post = (agent: ReturnType<typeof supertest.agent>, token: string | undefined) =>
        agent.post('/login').type('form').set('Accept', 'application/json').send({ ...(token === undefined ? {} : { _csrf: token }), username: 'admin', password: ADMIN_PASSWORD });
      const alice = supertest.agent(m.app);
      const mallory = supertest.agent(m.app);
      const aliceToken = csrfOf((await alice.get('/login')).text);
      const malloryToken = csrfOf((await mallory.get('/login')).text);

      for (const [agent, token] of [[alice, undefined], [alice, malloryToken], [mallory, aliceToken], [alice, 'forged'], [alice, `${aliceToken.split('.')[0]}.${'A'.repeat(43)}`]] as const) {
        const res = await post(agent, token).expect(403);
        assert.deepEqual(res.body, { error: CSRF_MESSAGE });
      }
      // No cookie at all: the form token alone is worth nothing.
      assert.deepEqual((await post(supertest.agent(m.app), aliceToken).expect(403)).body, { error: CSRF_MESSAGE });

      // A token past its hour, signed with the right key, is refused too.
      const cookie = /propagator_login=([^;]+)/.exec(String((await supertest(m.app).get('/login')).headers['set-cookie']))?.[1];
      assert.ok(cookie);
      const key = deriveKey((await m.services.masterKey()).privateKey, 'login-form');
      const expired = Date.now() - 1000;
      const stale = `${expired}.${createHmac('sha256', key).update(`${cookie}.${expired}`).digest('base64url')}`;
      const fresh = `${expired + 3_600_000}.${createHmac('sha256', key).update(`${cookie}.${expired + 3_600_000}`).digest('base64url')}`;
      const withCookie = (token: string) => supertest(m.app).post('/login').set('Cookie', `propagator_login=${cookie}`).set('Accept', 'application/json').type('form').send({ _csrf: token, username: 'admin', password: ADMIN_PASSWORD });
      assert.deepEqual((await withCookie(stale).expect(403)).body, { error: CSRF_MESSAGE });
      await withCookie(fresh).expect(303);

      await post(alice, aliceToken).expect(303);
      await post(mallory, malloryToken).expect(303);
    } finally {
      await m.cleanup();
    }
  });

  it('sets a short-lived, HttpOnly, SameSite=Strict form cookie, kept across reloads and dropped at login', async () => {
    const m = await createTestMaster(pki.root);
    try {
      const agent = supertest.agent(m.app);
      const first = await agent.get('/login').expect(200);
      assert.match(String(first.headers['set-cookie']), /^propagator_login=[A-Za-z0-9_-]{32}; Max-Age=3600; Path=\/login; Expires=[^;]+; HttpOnly; SameSite=Strict$/);
      const second = await agent.get('/login').expect(200);
      assert.equal(second.headers['set-cookie'], undefined, 'a second tab reuses the cookie');
      // Both pages' tokens work (two tabs).
      const login = await agent.post('/login').type('form').send({ _csrf: csrfOf(first.text), username: 'admin', password: ADMIN_PASSWORD }).expect(303);
      assert.match(String(login.headers['set-cookie']), /propagator_login=; Path=\/login; Expires=Thu, 01 Jan 1970/);
    } finally {
      await m.cleanup();
    }
  });
});

describe('a password change', () => {
  it('ends every other session of the admin, and keeps the one that changed it', async () => {
    const m = await createTestMaster(pki.root);
    try {
      const changer = await loginAgent(m.app);
      const other = await loginAgent(m.app);
      await other.agent.get('/servers').expect(200);
      await changer.agent.post('/settings/password').type('form').send({ _csrf: changer.csrf, current: ADMIN_PASSWORD, next: 'a new long password', confirm: 'a new long password' }).expect(200);

      const sent = await other.agent.get('/servers').set('Accept', 'text/html').expect(303);
      assert.equal(sent.headers.location, '/login?next=%2Fservers');
      const api = await other.agent.get('/api/servers').expect(401);
      assert.deepEqual(api.body, { error: 'Authentication required: log in, or send HTTP Basic credentials of the admin account' });
      await other.agent.post('/settings/product').type('form').send({ _csrf: other.csrf, product: 'watchdoc', version: '6.6.6' }).expect(401);
      assert.equal((await m.services.settings.productInfo()).version, '1.0.0');

      await changer.agent.get('/servers').expect(200);
      assert.equal(await sessionCount(m), 1);
      await supertest(m.app).get('/api/servers').set('Authorization', BASIC).expect(401);
      assert.ok(m.logs.some((l) => l.includes('"msg":"admin password changed"') && l.includes('"endedSessions":1')));
    } finally {
      await m.cleanup();
    }
  });

  it('ends every session when PROPAGATOR_ADMIN_PASSWORD changes it at start, and none at a plain restart', async () => {
    const m = await createTestMaster(pki.root);
    const data = m.dir;
    let current: TestMaster = m;
    try {
      const login = async () => {
        const agent = supertest.agent(current.app);
        const page = await agent.get('/login').expect(200);
        const res = await agent.post('/login').type('form').send({ _csrf: csrfOf(page.text), username: 'admin', password: ADMIN_PASSWORD }).expect(303);
        return /propagator_session=[^;]+/.exec(String(res.headers['set-cookie']))?.[0];
      };
      const cookie = await login();
      assert.ok(cookie);
      await current.stop();
      current = await openMaster(data, pki.root);
      await supertest(current.app).get('/servers').set('Cookie', cookie).expect(200);

      await current.stop();
      current = await openMaster(data, pki.root, { adminPassword: 'the password from the environment' });
      const ended = await supertest(current.app).get('/servers').set('Cookie', cookie).set('Accept', 'text/html').expect(303);
      assert.equal(ended.headers.location, '/login?next=%2Fservers');
      assert.equal(await sessionCount(current), 0);
    } finally {
      await current.stop().catch(() => undefined);
      await m.cleanup();
    }
  });
});
