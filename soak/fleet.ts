import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { freePort } from '../test/helpers/run.js';
import { AdminApi } from './api.js';
import type { SoakOptions } from './options.js';
import { ManagedProcess } from './processes.js';
import { startResettingProxy, type ResettingProxy } from './proxy.js';
import { sleep } from './random.js';

export const INITIAL_VERSION = '6.0.0';
/** Each agent's link to the master: 32 Mbit/s, so a big package takes 8 s to arrive. */
export const LINK_BYTES_PER_SECOND = 4 * 1024 * 1024;

export interface SoakAgent {
  name: string;
  mode: 'bidirectional' | 'mailbox';
  dataDir: string;
  process: ManagedProcess;
  serverId: number;
}

export interface Fleet {
  master: ManagedProcess;
  agents: SoakAgent[];
  proxy: ResettingProxy;
  api: AdminApi;
  masterDataDir: string;
  deadlines: { bidirectionalS: number; mailboxS: number };
}

/** Starts a process again, retrying a start that fails (a port not yet free after a kill). */
export async function restart(proc: ManagedProcess): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await proc.start();
      return;
    } catch (err) {
      if (attempt >= 5 || proc.isRetired()) throw err;
      await proc.kill();
      await sleep(1000 * attempt);
    }
  }
}

/**
 * The domain under soak: one master on a fixed port with a data folder of its own, and agents of
 * both modes that reach it only through the resetting proxy. The master accepts servers as they
 * enroll (--auto-accept), runs "999.0.0" so every package may go out, and has short deadlines so a
 * stuck target ends within minutes, not hours.
 */
export async function startFleet(work: string, options: SoakOptions, trust: string): Promise<Fleet> {
  const password = randomBytes(18).toString('base64url');
  const env = { PROPAGATOR_ADMIN_PASSWORD: password, PROPAGATOR_ENROLL_TOKEN: randomBytes(24).toString('base64url') };
  const logs = path.join(work, 'logs');
  await mkdir(logs, { recursive: true });
  const port = await freePort();
  const masterDataDir = path.join(work, 'master');
  const deadlines = { bidirectionalS: options.deadlineSeconds, mailboxS: Math.round(options.deadlineSeconds * 1.5) };
  const master = new ManagedProcess({
    name: 'master',
    args: ['master', '--host', '127.0.0.1', '--port', String(port), '--data', masterDataDir, '--trust', trust, '--name', 'soak-master',
      '--auto-accept', '--product-version', '999.0.0', '--deadline-bidirectional', String(deadlines.bidirectionalS), '--deadline-mailbox', String(deadlines.mailboxS)],
    env, logFile: path.join(logs, 'master.log'), ready: /Propagator master: (\S+)/,
  });
  const url = (await master.start())[1] ?? '';
  const proxy = await startResettingProxy(port, LINK_BYTES_PER_SECOND);
  const modes = [
    ...Array.from({ length: options.agents.bidirectional }, (_, i) => ({ name: `bidi-${i + 1}`, mode: 'bidirectional' as const })),
    ...Array.from({ length: options.agents.mailbox }, (_, i) => ({ name: `mail-${i + 1}`, mode: 'mailbox' as const })),
  ];
  const agents = await Promise.all(modes.map(async ({ name, mode }): Promise<SoakAgent> => {
    const dataDir = path.join(work, 'agents', name);
    // A fixed port: the master calls the address it accepted, so a restarted agent comes back there.
    const listen = mode === 'bidirectional' ? ['--host', '127.0.0.1', '--port', String(await freePort())] : [];
    const proc = new ManagedProcess({
      name,
      args: ['agent', '--master', proxy.url, '--name', name, '--mode', mode, '--data', dataDir, '--trust', trust, '--initial-version', INITIAL_VERSION,
        '--poll-min', '0.5', '--poll-max', '3', '--heartbeat', '2', ...listen],
      env, logFile: path.join(logs, `${name}.log`), ready: /enrolled as server (\d+)/,
    });
    const serverId = Number((await proc.start())[1]);
    return { name, mode, dataDir, process: proc, serverId };
  }));
  return { master, agents, proxy, api: new AdminApi(url, password), masterDataDir, deadlines };
}

const stopping = new WeakMap<Fleet, Promise<void>>();

/** Stops the agents, then the master (SIGTERM, SIGKILL after a grace), then the proxy; once. */
export function stopFleet(fleet: Fleet): Promise<void> {
  const done = stopping.get(fleet) ?? (async () => {
    await Promise.all(fleet.agents.map((a) => a.process.stop()));
    await fleet.master.stop();
    await fleet.proxy.close();
    await Promise.all([fleet.master, ...fleet.agents.map((a) => a.process)].map((p) => p.close()));
  })();
  stopping.set(fleet, done);
  return done;
}
