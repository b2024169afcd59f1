import assert from 'node:assert/strict';
import { it } from 'node:test';
import { hashPassword, hashToken, randomToken, tokenMatches, verifyPassword } from '../server/secrets.js';

it('makes tokens that can follow a flag on a command line', () => {
  const tokens = Array.from({ length: 2000 }, () => randomToken(24));
  assert.equal(tokens.filter((t) => t.startsWith('-')).length, 0);
  assert.ok(tokens.every((t) => /^[A-Za-z0-9_-]{32}$/.test(t)));
  assert.equal(new Set(tokens).size, tokens.length);
});

it('stores passwords with scrypt and tokens with SHA-256, and checks them', async () => {
  const stored = await hashPassword('correct horse');
  assert.match(stored, /^scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
  assert.equal(await verifyPassword('correct horse', stored), true);
  assert.equal(await verifyPassword('wrong horse', stored), false);
  assert.equal(await verifyPassword('x', 'not a hash'), false);
  const token = randomToken();
  assert.equal(tokenMatches(token, hashToken(token)), true);
  assert.equal(tokenMatches(`${token}x`, hashToken(token)), false);
  assert.ok(!hashToken(token).includes(token));
});
