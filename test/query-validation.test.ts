import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { BASIC, createTestMaster, loginAgent, masterWithWaitingOperation } from './helpers/master.js';
import { tempDir } from './helpers/run.js';
import { createTestPki } from './helpers/test-pki.js';

// Paging and filter parameters are checked at the edge: an absurd value is the client's mistake
// (400, saying which parameter and what it accepts), never an internal error.

let work: string;
let cleanup: () => Promise<void>;
let m: Awaited<ReturnType<typeof createTestMaster>>;
let operationId: number;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  ({ m, operationId } = await masterWithWaitingOperation(work, await createTestPki(path.join(work, 'pki')), 'Paged'));
});
after(async () => {
  await m.cleanup();
  await cleanup();
});

const whole = (name: string, min: number, max: number) => `"${name}" must be a whole number from ${min} to ${max}`;
const once = (name: string) => `"${name}" must be given once`;
const PAGE = whole('page', 1, 100000);
const LIMIT = whole('limit', 1, 500);
const OFFSET = whole('offset', 0, 1000000000);
const STATE = '"state" must be one of running, succeeded, failed, cancelled (or empty for all)';
const TARGET = '"target" must be one of pending, running, succeeded, failed, timedout, cancelled (or empty for all)';
const SEARCH = '"q" (the search text) must be at most 100 characters';

describe('query parameters of the lists', () => {
  it('answers 400 with the reason for absurd paging and filters on the API', async () => {
    const cases: [string, string][] = [
      ['/api/operations?offset=1e309', OFFSET],
      ['/api/operations?offset=-1', OFFSET],
      ['/api/operations?offset=1.5', OFFSET],
      ['/api/operations?offset=99999999999999999999', OFFSET],
      ['/api/operations?limit=-1', LIMIT],
      ['/api/operations?limit=abc', LIMIT],
      ['/api/operations?limit=0', LIMIT],
      ['/api/operations?limit=501', LIMIT],
      ['/api/operations?limit=', LIMIT],
      ['/api/operations?limit=1&limit=2', once('limit')],
      ['/api/operations?state=exploded', STATE],
      ['/api/operations?state=running&state=failed', once('state')],
      [`/api/operations/${operationId}?download=1&download=2`, once('download')],
    ];
    for (const [route, message] of cases) {
      const res = await supertest(m.app).get(route).set('Authorization', BASIC);
      assert.equal(res.status, 400, `${route}: ${res.text.slice(0, 200)}`);
      assert.deepEqual(res.body, { error: message }, route);
    }
    const ok = await supertest(m.app).get('/api/operations?state=running&limit=500&offset=0').set('Authorization', BASIC).expect(200);
    assert.equal(ok.body.length, 1);
    assert.equal(ok.headers['x-total-count'], '1');
    assert.equal((await supertest(m.app).get('/api/operations?offset=1000000000&state=').set('Authorization', BASIC).expect(200)).body.length, 0);
    await supertest(m.app).get(`/api/operations/${operationId}?download`).set('Authorization', BASIC).expect(200).expect('content-disposition', /attachment/);
  });

  it('answers 400 with the reason on console pages, and keeps the pages and filters that work', async () => {
    const { agent } = await loginAgent(m.app);
    const cases: [string, string][] = [
      ['/servers?page=1e400', PAGE],
      ['/servers?page=0', PAGE],
      ['/servers?page=-3', PAGE],
      ['/servers?page=abc', PAGE],
      ['/servers?page=1&page=2', once('page')],
      [`/servers?q=${'x'.repeat(101)}`, SEARCH],
      ['/servers?q=a&q=b', once('q')],
      ['/servers?removed=a&removed=b', once('removed')],
      ['/operations?page=1e400', PAGE],
      ['/operations?state=exploded', STATE],
      [`/operations/${operationId}?page=NaN`, PAGE],
      [`/operations/${operationId}?target=exploded`, TARGET],
      ['/updates?deleted=a&deleted=b', once('deleted')],
    ];
    for (const [route, message] of cases) {
      const res = await agent.get(route).set('Accept', 'text/html');
      assert.equal(res.status, 400, `${route}: ${res.text.slice(0, 200)}`);
      assert.ok(res.text.includes(message.replace(/"/g, '&#34;')), `${route}: ${res.text.slice(0, 1500)}`);
      assert.match(res.text, /<h1>Bad request<\/h1>/);
    }
    // The forms' own values: "all" is empty, a page past the end shows the last one.
    await agent.get('/operations?state=&page=1').expect(200);
    await agent.get('/operations?state=running').expect(200);
    await agent.get(`/operations/${operationId}?target=&q=`).expect(200);
    assert.match((await agent.get(`/operations/${operationId}?target=pending&q=print&page=7`).expect(200)).text, /print-away/);
    assert.match((await agent.get(`/servers?page=100000&q=${'p'.repeat(100)}`).expect(200)).text, /0 servers matching/);
    assert.match((await agent.get('/servers?removed=print-gone').expect(200)).text, /Removed print-gone from the domain/);
  });
});
