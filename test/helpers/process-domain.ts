import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { startAgentProcess, type AgentProcess } from './agent-process.js';
import { ADMIN_PASSWORD, BASIC } from './master.js';
import { startMasterProcess, waitFor, type MasterProcess } from './master-process.js';
import { freePort, tempDir } from './run.js';
import { createTestPki, type TestPki } from './test-pki.js';

export interface TargetView {
  server: string;
  serverId: number;
  state: string;
  message: string;
  versionAfter: string | null;
  deadlineAt: string | null;
}

export interface ServerListing {
  id: number;
  name: string;
  staged: { sha256: string; version: string }[];
}

/**
 * A domain of real processes: a master process on a fixed loopback port and data folder (so it
 * can be killed and started again as the same master), and agent processes, driven only through
 * the master's REST API, as an administrator's scripts and the console do.
 */
export interface ProcessDomain {
  work: string;
  pki: TestPki;
  port: number;
  dataDir: string;
  master: MasterProcess | null;
  agents: AgentProcess[];
  /** Starts (or starts again) the master on the same port and data folder. */
  startMaster(extra?: string[]): Promise<MasterProcess>;
  api<T>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }>;
  upload(file: string, name: string): Promise<{ id: number; sha256: string; size: number }>;
  /** Starts an operation; its id. */
  operate(action: 'propagate' | 'apply', packageId: number, servers: number[]): Promise<number>;
  /** Waits until the operation has ended; its targets. */
  ended(operationId: number, timeoutMs?: number): Promise<TargetView[]>;
  server(id: number): Promise<ServerListing>;
  startAgent(name: string, mode: 'mailbox' | 'bidirectional', data: string, extra?: string[], env?: NodeJS.ProcessEnv, masterUrl?: string): Promise<AgentProcess>;
  close(): Promise<void>;
}

export async function openProcessDomain(token: string, masterArgs: string[] = [], masterEnv: NodeJS.ProcessEnv = {}): Promise<ProcessDomain> {
  const { dir: work, cleanup } = await tempDir('propagator-procs-');
  const pki = await createTestPki(path.join(work, 'pki'));
  const port = await freePort();
  const dataDir = path.join(work, 'master-data');
  const env = { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD, PROPAGATOR_ENROLL_TOKEN: token, ...masterEnv };
  const d: ProcessDomain = {
    work, pki, port, dataDir, master: null, agents: [],
    startMaster: async (extra = []) => {
      d.master = await startMasterProcess(['--port', String(port), '--data', dataDir, '--trust', pki.root, '--auto-accept',
        '--product', 'watchdoc', '--product-version', '9.0.0', ...masterArgs, ...extra], env);
      return d.master;
    },
    api: async <T>(method: string, route: string, body?: unknown) => {
      const res = await fetch(`http://127.0.0.1:${port}${route}`, {
        method, headers: { authorization: BASIC, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
    },
    upload: async (file, name) => {
      const form = new FormData();
      form.set('name', name);
      form.set('package', new Blob([await readFile(file)]), path.basename(file));
      const res = await fetch(`http://127.0.0.1:${port}/api/packages`, { method: 'POST', headers: { authorization: BASIC }, body: form });
      const body = await res.json() as { id: number; sha256: string; size: number; error?: string };
      if (res.status !== 201) throw new Error(`upload of ${name} answered ${res.status}: ${body.error ?? ''}`);
      return body;
    },
    operate: async (action, packageId, servers) => {
      const res = await d.api<{ id: number; error?: string }>('POST', '/api/operations', { action, package: packageId, servers });
      if (res.status !== 202) throw new Error(`operation refused (${res.status}): ${res.body.error ?? ''}`);
      return res.body.id;
    },
    ended: async (operationId, timeoutMs = 60_000) => {
      let targets: TargetView[] = [];
      try {
        await waitFor(async () => {
          const res = await d.api<{ state: string; targets: TargetView[] }>('GET', `/api/operations/${operationId}`).catch(() => null);
          targets = res?.body.targets ?? targets;
          return res?.body.state !== undefined && res.body.state !== 'running';
        }, timeoutMs, `operation ${operationId} to end`);
      } catch (err) {
        throw new Error(`${(err as Error).message}: ${JSON.stringify(targets)}; agent logs:\n${d.agents.map((a) => a.logs().split('\n').slice(-12).join('\n')).join('\n---\n')}`, { cause: err });
      }
      return targets;
    },
    server: async (id) => {
      const listing = (await d.api<ServerListing[]>('GET', '/api/servers')).body.find((s) => s.id === id);
      if (!listing) throw new Error(`no server ${id} in /api/servers`);
      return listing;
    },
    startAgent: async (name, mode, data, extra = [], agentEnv = {}, masterUrl) => {
      const args = ['--master', masterUrl ?? `http://127.0.0.1:${port}`, '--name', name, '--mode', mode, '--data', data, '--trust', pki.root,
        '--initial-version', '6.1.0', '--poll-min', '0.2', '--poll-max', '1', '--heartbeat', '1',
        ...(mode === 'bidirectional' ? ['--host', '127.0.0.1', '--port', '0'] : []), ...extra];
      const agent = await startAgentProcess(args, { PROPAGATOR_ENROLL_TOKEN: token, ...agentEnv });
      d.agents.push(agent);
      return agent;
    },
    close: async () => {
      await Promise.all(d.agents.map((a) => a.stop('SIGKILL')));
      await d.master?.stop('SIGKILL');
      await cleanup();
    },
  };
  return d;
}
