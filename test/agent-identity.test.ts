import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runAgentToExit, startAgentProcess } from './helpers/agent-process.js';
import { openTestDomain, type TestDomain } from './helpers/domain.js';

const TOKEN = 'identity-enrollment-token-0123456789';

let d: TestDomain;
/** An enrolled agent's data folder, copied into each case before its file is damaged. */
let good: { identity: string; key: string };

before(async () => {
  d = await openTestDomain(TOKEN);
  const agent = await startAgentProcess(args('print-id', path.join(d.work, 'enrolled')), { PROPAGATOR_ENROLL_TOKEN: TOKEN });
  await agent.stop();
  good = {
    identity: await readFile(path.join(d.work, 'enrolled', 'identity.json'), 'utf8'),
    key: await readFile(path.join(d.work, 'enrolled', 'agent-key.pem'), 'utf8'),
  };
});
after(() => d.close());

function args(name: string, data: string): string[] {
  return ['--master', d.master.url, '--name', name, '--mode', 'mailbox', '--data', data, '--trust', d.pki.root, '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1'];
}

let cases = 0;
/** A data folder holding the enrolled agent's files, with one of them replaced. */
async function folder(files: { identity?: string | null; key?: string | null }): Promise<string> {
  const data = path.join(d.work, `case-${++cases}`);
  await mkdir(data, { recursive: true, mode: 0o700 });
  const identity = files.identity === undefined ? good.identity : files.identity;
  const key = files.key === undefined ? good.key : files.key;
  if (identity !== null) await writeFile(path.join(data, 'identity.json'), identity, { mode: 0o600 });
  if (key !== null) await writeFile(path.join(data, 'agent-key.pem'), key, { mode: 0o600 });
  return data;
}

const identityRemedy = 'restore it from a backup, or remove it and enroll this server again with an enrollment token (PROPAGATOR_ENROLL_TOKEN or --enroll-token-file)';
const keyRemedy = 'restore it from a backup, or remove it and identity.json and enroll this server again with an enrollment token; the administrator accepts its new key in New servers';

describe('a damaged identity.json', () => {
  const edit = (change: (identity: Record<string, unknown>) => Record<string, unknown>) => `${JSON.stringify(change(JSON.parse(good.identity) as Record<string, unknown>))}\n`;
  const damaged: [string, () => string, string][] = [
    ['cut short', () => good.identity.slice(0, 60), 'it is not JSON: Unterminated string in JSON at position 60'],
    ['empty', () => '', 'it is not JSON: Unexpected end of JSON input'],
    ['an empty object', () => '{}', 'name is missing'],
    ['not an object', () => '[1, 2]', 'it should hold an object, not an array'],
    ['a server id that is text', () => edit((i) => ({ ...i, serverId: 'seven' })), 'serverId should be a number or null, not a string'],
    ['a state it does not know', () => edit((i) => ({ ...i, state: 'admitted' })), 'state should be "pending" or "accepted"'],
    ['a master key that is not one', () => edit((i) => ({ ...i, masterPublicKey: 'not a key' })), 'masterPublicKey is not an Ed25519 public key (PEM)'],
    ['no key fingerprint', () => edit(({ keyFingerprint: _, ...rest }) => rest), 'keyFingerprint is missing'],
  ];
  for (const [what, content, reason] of damaged) {
    it(`refuses to start, naming the file and the remedy: ${what}`, async () => {
      const data = await folder({ identity: content() });
      const { code, output } = await runAgentToExit(args('print-id', data));
      assert.equal(code, 2, output);
      assert.equal(output, `propagator: ${path.join(data, 'identity.json')} is damaged (${reason}): ${identityRemedy}\n`);
      assert.equal(await readFile(path.join(data, 'agent-key.pem'), 'utf8'), good.key, 'the key is kept');
    });
  }

  it('still tells an identity of 0.1 (a shared secret) from a damaged one', async () => {
    const old = JSON.parse(good.identity) as Record<string, unknown>;
    const data = await folder({ identity: JSON.stringify({ serverId: old.serverId, secret: 's'.repeat(43), masterPublicKey: old.masterPublicKey, name: 'print-id', masterUrl: d.master.url, enrolledAt: old.enrolledAt }) });
    const { code, output } = await runAgentToExit(args('print-id', data));
    assert.equal(code, 2);
    assert.match(output, /propagator: this agent enrolled before agents had keys: enroll it again with an enrollment token/);
  });

  it('starts again once the file is removed and the agent enrolls again with its key', async () => {
    const data = await folder({ identity: '{"name": "print-id", "mas' });
    await rm(path.join(data, 'identity.json'));
    const agent = await startAgentProcess(args('print-id', data), { PROPAGATOR_ENROLL_TOKEN: TOKEN });
    d.agents.push(agent);
    assert.equal(agent.serverId, (JSON.parse(good.identity) as { serverId: number }).serverId, 'the same server: its key is known');
  });
});

describe('a damaged agent-key.pem', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const damaged: [string, () => string, string][] = [
    ['cut short', () => good.key.slice(0, 50), 'not a private key in PEM'],
    ['empty', () => '', 'the file is empty'],
    ['another kind of key', () => rsa, 'an rsa key, not Ed25519'],
  ];
  for (const [what, content, reason] of damaged) {
    it(`refuses to start, naming the file and the remedy: ${what}`, async () => {
      const data = await folder({ key: content() });
      const { code, output } = await runAgentToExit(args('print-id', data));
      assert.equal(code, 2, output);
      assert.equal(output, `propagator: ${path.join(data, 'agent-key.pem')} is damaged (${reason}): ${keyRemedy}\n`);
    });
  }

  it('refuses a key that is not the one identity.json was enrolled with, or no key at all', async () => {
    const other = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const fingerprint = (JSON.parse(good.identity) as { keyFingerprint: string }).keyFingerprint;
    const swapped = await folder({ key: other });
    const wrong = await runAgentToExit(args('print-id', swapped));
    assert.equal(wrong.code, 2);
    assert.match(wrong.output, new RegExp(`^propagator: ${path.join(swapped, 'agent-key.pem')} is not the key this server enrolled with \\(identity.json names ${fingerprint.replace(/[+/]/g, '\\$&')}, the file holds SHA256:\\S+\\): restore the key from a backup, or remove it and identity.json and enroll this server again with an enrollment token; the administrator accepts its new key in New servers\\n$`));
    const missing = await folder({ key: null });
    const none = await runAgentToExit(args('print-id', missing));
    assert.equal(none.code, 2);
    assert.equal(none.output, `propagator: ${path.join(missing, 'agent-key.pem')} is missing, though identity.json says this server enrolled with the key ${fingerprint}: ${keyRemedy.replace('remove it and', 'remove')}\n`);
  });
});
