import assert from 'node:assert/strict';
import { it } from 'node:test';
import { compareVersions, isValidVersion } from '../lib/version.js';

it('accepts 1 to 4 dot-separated numbers only', () => {
  for (const v of ['6', '6.1', '6.1.2', '6.1.2.1234', '0.0.0.0']) assert.equal(isValidVersion(v), true, v);
  for (const v of ['', '6.', '.6', '6.1.2.3.4', 'v6', '6.1-beta', '6..1', ' 6.1', '6.1 ']) assert.equal(isValidVersion(v), false, v);
});

it('compares number by number, missing parts counting as 0', () => {
  assert.ok(compareVersions('6.10', '6.9') > 0);
  assert.ok(compareVersions('6.1.2', '6.1.10') < 0);
  assert.equal(compareVersions('6.1', '6.1.0.0'), 0);
  assert.equal(compareVersions('06.1', '6.1'), 0);
  assert.ok(compareVersions('7', '6.99.99.99') > 0);
  assert.ok(compareVersions('1.999999999999999999', '1.999999999999999998') > 0);
});
