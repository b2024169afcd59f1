import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ADMIN_PASSWORD, csrfOf } from './helpers/master.js';
import { startMasterProcess, waitFor, type MasterProcess } from './helpers/master-process.js';
import { basic, cookiesOf, form, rawRequest } from './helpers/http-request.js';
import { must, tempDir } from './helpers/run.js';

let work: string;
let cleanup: () => Promise<void>;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
});
after(() => cleanup());

const env = { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD };
const mode = async (file: string) => ((await stat(file)).mode & 0o777).toString(8);

async function withMaster<T>(args: string[], run: (master: MasterProcess) => Promise<T>): Promise<T> {
  const master = await startMasterProcess(['--trust', path.join(work, 'no-trust'), ...args], env);
  try {
    return await run(master);
  } finally {
    await master.stop();
  }
}

describe('secrets in the logs', () => {
  it('never logs a password typed into the user name field, on the login form or with HTTP Basic', async () => {
    await withMaster(['--data', path.join(work, 'logs')], async (master) => {
      const page = await rawRequest(`${master.url}/login`);
      const post = (username: string, password: string) => rawRequest(`${master.url}/login`, {
        method: 'POST',
        headers: { cookie: cookiesOf(page), 'content-type': 'application/x-www-form-urlencoded' },
        body: form({ _csrf: csrfOf(page.body), username, password }),
      });
      // The admin types the password in the user name field, then in both.
      assert.equal((await post(ADMIN_PASSWORD, '')).status, 401);
      assert.equal((await post(ADMIN_PASSWORD, ADMIN_PASSWORD)).status, 401);
      assert.equal((await post('admin', 'a wrong password')).status, 401);
      assert.equal((await rawRequest(`${master.url}/api/servers`, { headers: { authorization: basic(ADMIN_PASSWORD, ADMIN_PASSWORD) } })).status, 401);
      assert.equal((await rawRequest(`${master.url}/api/servers`, { headers: { authorization: basic(ADMIN_PASSWORD, 'x') } })).status, 401);
      assert.equal((await rawRequest(`${master.url}/api/servers`, { headers: { authorization: basic('admin', ADMIN_PASSWORD) } })).status, 200);
      assert.equal((await post('admin', ADMIN_PASSWORD)).status, 303);
      await waitFor(async () => master.stdout().includes('"msg":"login","user":"admin"'), 10_000, 'the login line');

      const out = master.stdout();
      const failures = out.split('\n').filter((l) => l.includes('failed'));
      assert.equal(failures.filter((l) => l.includes('"msg":"login failed: unknown user name (not logged)"')).length, 2);
      assert.equal(failures.filter((l) => l.includes('"msg":"login failed: wrong password","user":"admin"')).length, 1);
      assert.equal(failures.filter((l) => l.includes('"msg":"HTTP Basic authentication failed: unknown user name (not logged)"')).length, 2);
      assert.ok(!out.includes(ADMIN_PASSWORD) && !master.stderr().includes(ADMIN_PASSWORD), 'the password is nowhere in the output');
      assert.ok(!out.includes(Buffer.from(ADMIN_PASSWORD).toString('base64')), 'nor its base64');
    });
  });
});

describe('the data folder', () => {
  it('is private to the master (0700, database files 0600) whatever modes it had before', async () => {
    const data = path.join(work, 'modes');
    await mkdir(data, { mode: 0o755 });
    await chmod(data, 0o755);
    const db = path.join(data, 'propagator.sqlite');
    const check = async () => {
      assert.equal(await mode(data), '700');
      for (const file of [db, `${db}-wal`, `${db}-shm`]) assert.equal(await mode(file), '600', file);
    };
    await withMaster(['--data', data], check);

    // An existing folder and database opened up by hand (or by an old version).
    await chmod(data, 0o755);
    await chmod(db, 0o644);
    await withMaster(['--data', data], check);
  });
});

describe('HTTPS', () => {
  it('sends Strict-Transport-Security with every answer when it serves TLS, and not over plain HTTP', async () => {
    const cert = path.join(work, 'tls.pem');
    const key = path.join(work, 'tls.key');
    await must('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
    const ca = await readFile(cert, 'utf8');
    await withMaster(['--data', path.join(work, 'tls'), '--tls-cert', cert, '--tls-key', key], async (master) => {
      assert.match(master.url, /^https:/);
      const answers = await Promise.all([
        ['/health', {}], ['/login', {}], ['/servers', {}], ['/api/servers', {}], ['/api/servers', { authorization: basic('admin', ADMIN_PASSWORD) }],
        ['/no/such/page', { authorization: basic('admin', ADMIN_PASSWORD) }], ['/api/agent/report', {}],
      ].map(([route, headers]) => rawRequest(`${master.url}${route as string}`, { ca, headers: headers as Record<string, string> })));
      assert.deepEqual(answers.slice(0, 6).map((r) => r.status), [200, 200, 303, 401, 200, 404]);
      for (const r of answers) assert.equal(r.headers['strict-transport-security'], 'max-age=31536000');
    });
    await withMaster(['--data', path.join(work, 'plain')], async (master) => {
      const health = await rawRequest(`${master.url}/health`);
      assert.equal(health.headers['strict-transport-security'], undefined);
    });
  });
});
