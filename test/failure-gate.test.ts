import assert from 'node:assert/strict';
import { it } from 'node:test';
import { AuthenticationError } from '../server/errors.js';
import { FailureGate } from '../server/http/failure-limiter.js';

const wrong = new AuthenticationError('The enrollment token is wrong');
const gate = () => new FailureGate({ windowMs: 60_000, limit: 2, message: 'Too many failed enrollments from this address', maxAddresses: 100 });

it('answers a wrong guess until the limit, then only 429s, right or wrong', () => {
  const g = gate();
  assert.equal(g.failed('10.0.0.1', wrong), wrong);
  assert.equal(g.failed('10.0.0.1', wrong), wrong);
  const past = g.failed('10.0.0.1', wrong);
  assert.equal(past.message, 'Too many failed enrollments from this address');
  assert.throws(() => g.assertOpen('10.0.0.1'), { message: 'Too many failed enrollments from this address' });
  g.assertOpen('10.0.0.2');
  g.assertOpen('10.0.0.1', Date.now() + 61_000);
});

it('counts an IPv6 /64 as one address', () => {
  const g = gate();
  g.failed('2001:db8:1:2::1', wrong);
  g.failed('2001:db8:1:2:ffff::9', wrong);
  assert.throws(() => g.assertOpen('2001:db8:1:2::abcd'));
  g.assertOpen('2001:db8:1:3::1');
});

it('remembers a bounded number of addresses: a spray from many forgets the oldest, and never slows down', () => {
  const g = gate();
  g.failed('10.1.0.0', wrong);
  g.failed('10.1.0.0', wrong);
  assert.throws(() => g.assertOpen('10.1.0.0'));
  for (let i = 1; i <= 150; i++) g.failed(`10.2.0.${i}`, wrong);
  g.assertOpen('10.1.0.0');
});
