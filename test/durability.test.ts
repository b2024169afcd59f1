import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { tryRun } from './helpers/disks.js';
import { ADMIN_PASSWORD, BASIC } from './helpers/master.js';
import { makePackage } from './helpers/openssl-package.js';
import { BIN, tempDir } from './helpers/run.js';
import { SimulatedAgent } from './helpers/simulated-agent.js';
import { createTestPki, type TestPki } from './helpers/test-pki.js';

/**
 * What the master acknowledged must survive a power cut. A power cut cannot be had in a test, so
 * this one watches the system calls of a real master (strace): an answer 201 or 202 may leave the
 * master only after the data it acknowledges reached the disk, that is after the fsync (or
 * fdatasync) of the SQLite WAL that holds the new rows, and for a package, of its file and of the
 * folder entry that names it. With synchronous=NORMAL the WAL was synced only at checkpoints, and
 * the package file never: both answers went out with their data in the page cache only.
 */

const ENROLL_TOKEN = 'durability-test-enrollment-token-0123456789';

let work: string;
let cleanup: () => Promise<void>;
let pki: TestPki;
let packageFile: string;
/** strace, and the master it started (its child): the master is stopped first, strace then ends. */
let traced: { strace: ChildProcess; master: number; exited: Promise<void> } | null = null;

before(async () => {
  ({ dir: work, cleanup } = await tempDir());
  pki = await createTestPki(path.join(work, 'pki'));
  packageFile = await makePackage(work, 'durable', { publisher: pki.good.rsa, payloadDir: path.join(pki.dir, 'ca') });
});
after(async () => {
  await stopTracedMaster('SIGKILL');
  await cleanup();
});

/** One system call as strace saw it: where it began and ended in the trace (its line numbers). */
interface Call {
  name: string;
  /** Its arguments as printed (the first descriptor's path included, with -y). */
  args: string;
  result: string;
  start: number;
  end: number;
}

/** strace -f output, an unfinished call joined with its resumption (other threads' calls come between). */
function parseTrace(text: string): Call[] {
  const calls: Call[] = [];
  const open = new Map<string, Call>();
  text.split('\n').forEach((line, index) => {
    const unfinished = /^(\d+) +\S+ (\w+)\((.*) <unfinished \.\.\.>$/.exec(line);
    if (unfinished) {
      const call = { name: unfinished[2] as string, args: unfinished[3] as string, result: '', start: index, end: -1 };
      open.set(unfinished[1] as string, call);
      calls.push(call);
      return;
    }
    const resumed = /^(\d+) +\S+ <\.\.\. (\w+) resumed>.*\) += (.*)$/.exec(line);
    if (resumed) {
      const call = open.get(resumed[1] as string);
      if (call) {
        call.end = index;
        call.result = resumed[3] as string;
        open.delete(resumed[1] as string);
      }
      return;
    }
    const whole = /^\d+ +\S+ (\w+)\((.*)\) += (.*)$/.exec(line);
    if (whole) calls.push({ name: whole[1] as string, args: whole[2] as string, result: whole[3] as string, start: index, end: index });
  });
  return calls;
}

const SYNCS = new Set(['fsync', 'fdatasync']);
const WRITES = new Set(['write', 'writev', 'pwrite64', 'pwritev', 'pwritev2']);
/** The path strace -y printed for a call's first argument, a descriptor. */
const pathOf = (call: Call) => /^\d+<([^>]*)>/.exec(call.args)?.[1] ?? '';
const succeeded = (call: Call) => call.end >= 0 && /^\d+/.test(call.result);

/** The line where the master began to write an answer with this status line. */
function answerStart(calls: Call[], statusLine: string): number {
  const answer = calls.find((c) => WRITES.has(c.name) && c.args.includes(statusLine));
  assert.ok(answer, `the trace has no answer "${statusLine}"`);
  return answer.start;
}

/** The first completed fsync/fdatasync of `file` after line `from` and before line `before`, or undefined. */
function syncBetween(calls: Call[], file: (p: string) => boolean, from: number, beforeLine: number): Call | undefined {
  return calls.find((c) => SYNCS.has(c.name) && file(pathOf(c)) && succeeded(c) && c.start > from && c.end < beforeLine);
}

/** Starts a master under strace; resolves with its URL once it announced it. */
function startTracedMaster(data: string, trace: string): Promise<{ url: string; stderr: () => string }> {
  const child = spawn('strace', [
    '-f', '-tt', '-y', '-s', '4096', '-o', trace,
    '-e', 'trace=write,writev,pwrite64,pwritev,pwritev2,fsync,fdatasync,rename,renameat,renameat2',
    process.execPath, BIN, 'master', '--host', '127.0.0.1', '--port', '0', '--data', data, '--trust', pki.root, '--auto-accept', '--product-version', '9.0.0',
  ], { env: { ...process.env, PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD, PROPAGATOR_ENROLL_TOKEN: ENROLL_TOKEN }, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let err = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the traced master did not start: ${err}`)), 60_000);
    child.stderr?.on('data', (c: Buffer) => {
      err += c.toString();
      const match = /Propagator master: (\S+)/.exec(err);
      if (match?.[1] && child.pid) {
        clearTimeout(timer);
        const master = Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
        traced = { strace: child, master, exited };
        resolve({ url: match[1], stderr: () => err });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`strace exited with ${code}: ${err}`));
    });
  });
}

/** Stops the traced master, and waits for strace to write its last line and end. */
async function stopTracedMaster(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!traced) return;
  const { master, exited } = traced;
  traced = null;
  try {
    process.kill(master, signal);
  } catch {
    // already gone
  }
  await exited;
}

describe('what the master acknowledges is on the disk first (strace of a real master)', () => {
  it('fsyncs the package file, its folder and the WAL before 201, and the WAL before 202', { timeout: 120_000 }, async (t: TestContext) => {
    const probe = await tryRun('strace', ['-f', '-o', '/dev/null', '-e', 'trace=fsync', 'true']);
    if (probe.code !== 0) {
      t.skip(`strace cannot trace here (Debian package strace, and ptrace allowed): ${probe.output}`);
      return;
    }
    const data = path.join(work, 'data');
    const trace = path.join(work, 'master.strace');
    const master = await startTracedMaster(data, trace);
    // A name found nowhere else: the database pages that hold it are this package's rows.
    const name = `Durable ${randomBytes(8).toString('hex')}`;
    const form = new FormData();
    form.set('name', name);
    form.set('package', new Blob([await readFile(packageFile)]), 'durable.pkg');
    const uploaded = await fetch(`${master.url}/api/packages`, { method: 'POST', headers: { authorization: BASIC }, body: form });
    assert.equal(uploaded.status, 201, await uploaded.clone().text());
    const stored = (await uploaded.json()) as { id: number; sha256: string };
    const agent = await new SimulatedAgent(master.url, 'durable-slave').join(ENROLL_TOKEN);
    const operation = await fetch(`${master.url}/api/operations`, {
      method: 'POST',
      headers: { authorization: BASIC, 'content-type': 'application/json' },
      body: JSON.stringify({ action: 'propagate', package: stored.id, servers: [agent.serverId] }),
    });
    assert.equal(operation.status, 202, await operation.clone().text());
    await stopTracedMaster();

    const calls = parseTrace(await readFile(trace, 'utf8'));
    const created = answerStart(calls, 'HTTP/1.1 201 Created');
    const accepted = answerStart(calls, 'HTTP/1.1 202 Accepted');
    const isWal = (p: string) => p === path.join(data, 'propagator.sqlite-wal');

    // The package file: written, fsynced, renamed into the store, the store folder fsynced, then 201.
    const partWrites = calls.filter((c) => WRITES.has(c.name) && /\/tmp\/upload-[^/]+\.part$/.test(pathOf(c)));
    assert.ok(partWrites.length > 0, 'the trace shows no write of the upload');
    const lastPartWrite = Math.max(...partWrites.map((c) => c.end));
    const renamed = calls.find((c) => c.name.startsWith('rename') && c.args.includes(`/packages/${stored.sha256}.pkg`) && succeeded(c));
    assert.ok(renamed && renamed.end < created, 'the package file is renamed into the store before the 201');
    const fileSync = syncBetween(calls, (p) => /\/tmp\/upload-[^/]+\.part$/.test(p) || p.endsWith(`/packages/${stored.sha256}.pkg`), lastPartWrite, renamed.start);
    assert.ok(fileSync, 'the package file is not fsynced between its last write and its rename into the store');
    assert.ok(syncBetween(calls, (p) => p === path.join(data, 'packages'), renamed.end, created), 'the store folder is not fsynced between the rename and the 201');

    // The WAL: every write of a page holding the new package's rows is synced before the 201.
    const rowWrites = (from: number, to: number) => calls.filter((c) => WRITES.has(c.name) && isWal(pathOf(c)) && c.args.includes(name) && c.start > from && c.start < to);
    const packageRows = rowWrites(-1, created);
    assert.ok(packageRows.length >= 2, `${packageRows.length} WAL writes of the package's row before the 201 (stored, then valid)`);
    for (const write of packageRows) assert.ok(syncBetween(calls, isWal, write.end, created), `the WAL write at line ${write.start + 1} is not synced before the 201 (line ${created + 1})`);

    // The operation's rows (they carry the package's name): synced before the 202.
    const operationRows = rowWrites(created, accepted);
    assert.ok(operationRows.length >= 1, 'no WAL write of the operation before the 202');
    for (const write of operationRows) assert.ok(syncBetween(calls, isWal, write.end, accepted), `the WAL write at line ${write.start + 1} is not synced before the 202 (line ${accepted + 1})`);
  });
});
