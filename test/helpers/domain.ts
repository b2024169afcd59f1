import path from 'node:path';
import supertest from 'supertest';
import type { Command } from '../../server/domain.js';
import type { AgentProcess } from './agent-process.js';
import { BASIC, createTestMaster, listenMaster } from './master.js';
import { waitFor } from './master-process.js';
import { tempDir } from './run.js';
import { createTestPki, type TestPki } from './test-pki.js';

/**
 * What the agent tests run against: a test PKI, a master built in this process and listening on
 * loopback, and the agent processes the tests start (pushed onto `agents`, killed by close()).
 */
export interface TestDomain {
  work: string;
  pki: TestPki;
  m: Awaited<ReturnType<typeof createTestMaster>>;
  master: { url: string; close(): Promise<void> };
  agents: AgentProcess[];
  /** Uploads a package through the REST API; its id. */
  upload(file: string): Promise<number>;
  /** Waits for a command to succeed or fail; on a timeout, the error carries the agents' last logs. */
  finished(commandId: string, timeoutMs?: number): Promise<Command>;
  close(): Promise<void>;
}

/** Servers are accepted as they enroll unless `autoAccept` is false (admission tests). */
export async function openTestDomain(enrollToken: string, options: { autoAccept?: boolean } = {}): Promise<TestDomain> {
  const { dir: work, cleanup } = await tempDir();
  const pki = await createTestPki(path.join(work, 'pki'));
  const m = await createTestMaster(pki.root, { enrollToken, autoAccept: options.autoAccept ?? true });
  await m.services.settings.init({ product: null, productVersion: null, enrollToken });
  const master = await listenMaster(m);
  const agents: AgentProcess[] = [];
  let uploads = 0;
  return {
    work, pki, m, master, agents,
    upload: async (file) => {
      const res = await supertest(m.app).post('/api/packages').set('Authorization', BASIC).field('name', `pkg ${++uploads}`).attach('package', file).expect(201);
      return res.body.id as number;
    },
    finished: async (id, timeoutMs = 30_000) => {
      try {
        await waitFor(async () => ['succeeded', 'failed'].includes((await m.services.commands.get(id)).state), timeoutMs, `command ${id} to finish`);
      } catch (err) {
        const c = await m.services.commands.get(id);
        throw new Error(`${(err as Error).message}: it is ${c.state} (${c.message}); agent logs:\n${agents.map((a) => a.logs().split('\n').slice(-15).join('\n')).join('\n---\n')}`, { cause: err });
      }
      return m.services.commands.get(id);
    },
    close: async () => {
      await Promise.all(agents.map((a) => a.stop('SIGKILL')));
      await master.close();
      await m.cleanup();
      await cleanup();
    },
  };
}
