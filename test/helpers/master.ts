import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Express } from 'express';
import supertest from 'supertest';
import { createApp } from '../../server/app.js';
import { loadMasterConfig, type MasterConfig } from '../../server/config.js';
import pg from 'pg';
import type { Database, DatabaseLocation } from '../../server/db/database.js';
import { openDatabase } from '../../server/db/open-database.js';
import { memoryLogger } from '../../lib/logger.js';
import { FolderStore } from '../../server/folder-store.js';
import { ServersRepo } from '../../server/db/servers-repo.js';
import { bootstrapMaster, createServices, type MasterServices } from '../../server/services.js';
import { makePackage } from './openssl-package.js';
import { tempDir } from './run.js';
import type { TestPki } from './test-pki.js';

export const ADMIN_PASSWORD = 'correct horse battery staple';
export const BASIC = `Basic ${Buffer.from(`admin:${ADMIN_PASSWORD}`).toString('base64')}`;

export interface TestMaster {
  app: Express;
  dir: string;
  config: Readonly<MasterConfig>;
  db: Database;
  store: FolderStore;
  services: MasterServices;
  logs: string[];
  /** Closes the database (the data folder stays, for restart tests). */
  stop(): Promise<void>;
}

/**
 * With PROPAGATOR_TEST_POSTGRES (a URL of a PostgreSQL server's maintenance database, set by
 * `npm run test:postgres`), each data folder gets a database of its own on that server instead of
 * its SQLite file; a master opened again on the same folder finds the same database.
 */
const postgresOf = new Map<string, string>();

async function testDatabase(dataDir: string): Promise<DatabaseLocation | null> {
  const server = process.env.PROPAGATOR_TEST_POSTGRES;
  if (!server) return null;
  let url = postgresOf.get(dataDir);
  if (!url) {
    const name = `t_${randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: server });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`).finally(() => admin.end());
    url = Object.assign(new URL(server), { pathname: `/${name}` }).toString();
    postgresOf.set(dataDir, url);
  }
  return { engine: 'postgres', url };
}

/** A master built in-process, as main.ts builds it, on a data folder of its own. */
export async function openMaster(dataDir: string, trustPath: string, overrides: Partial<MasterConfig> = {}): Promise<TestMaster> {
  const database = await testDatabase(dataDir);
  const config = Object.freeze({
    ...loadMasterConfig(['--data', dataDir, '--host', '127.0.0.1', '--port', '0', '--trust', trustPath, '--name', 'master-test'], { PROPAGATOR_ADMIN_PASSWORD: ADMIN_PASSWORD }),
    ...(database ? { database } : {}),
    ...overrides,
  });
  const log = memoryLogger();
  const store = new FolderStore(config.dataDir);
  await store.init();
  const db = await openDatabase(config.database);
  const services = createServices({ config, db, store, log });
  await bootstrapMaster(services, config);
  const app = createApp({ config, db, store, log, services });
  return { app, dir: dataDir, config, db, store, services, logs: log.lines, stop: async () => { await services.agents.flush(); await db.close(); } };
}

export async function createTestMaster(trustPath: string, overrides: Partial<MasterConfig> = {}): Promise<TestMaster & { cleanup(): Promise<void> }> {
  const { dir, cleanup } = await tempDir('propagator-master-');
  const master = await openMaster(path.join(dir, 'data'), trustPath, overrides);
  return { ...master, cleanup: async () => { await master.stop().catch(() => undefined); await cleanup(); } };
}

/** The hidden CSRF token of a rendered page. */
export function csrfOf(html: string): string {
  const match = /name="_csrf" value="([^"]+)"/.exec(html) ?? /data-csrf="([^"]+)"/.exec(html);
  if (!match?.[1]) throw new Error('no CSRF token in the page');
  return match[1];
}

/** A browser-like client (cookies kept) logged in to the console. */
export async function loginAgent(app: Express, password = ADMIN_PASSWORD) {
  const agent = supertest.agent(app);
  const page = await agent.get('/login').expect(200);
  await agent.post('/login').type('form').send({ _csrf: csrfOf(page.text), username: 'admin', password, next: '/servers' }).expect(303);
  const servers = await agent.get('/servers').expect(200);
  return { agent, csrf: csrfOf(servers.text) };
}

/** Serves a test master on a loopback port with its dispatcher running, as main.ts would. */
export async function listenMaster(m: TestMaster, port = 0): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer(m.app);
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  const bound = (server.address() as AddressInfo).port;
  m.services.dispatcher.start();
  m.services.engine.start();
  return {
    url: `http://127.0.0.1:${bound}`,
    close: async () => {
      await m.services.engine.stop();
      await m.services.dispatcher.stop();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A slave server in the database only (no agent behind it): for pages and operations that need one. */
export async function addServerRow(db: Database, name: string, fields: { mode?: 'mailbox' | 'bidirectional'; address?: string | null; version?: string } = {}): Promise<number> {
  const at = new Date().toISOString();
  return new ServersRepo(db).admit({
    name, mode: fields.mode ?? 'mailbox', address: fields.address ?? null, product: 'watchdoc', version: fields.version ?? '0.9.0',
    publicKey: 'none', keyFingerprint: `SHA256:test-${name}`, requestedFrom: null, acceptedBy: 'test', enrolledAt: at, at,
  });
}

/**
 * A master with one slave that never calls in and a propagate operation to it, which therefore
 * stays running (its target pending): what the console's attack tests try to change or cancel.
 */
export async function masterWithWaitingOperation(work: string, pki: TestPki, packageName: string) {
  const m = await createTestMaster(pki.root);
  await addServerRow(m.db, 'print-away');
  const payload = path.join(work, 'payload');
  await mkdir(payload);
  await writeFile(path.join(payload, 'watchdoc.conf'), 'release\n');
  const file = await makePackage(work, 'waiting', { publisher: pki.good.rsa, payloadDir: payload, version: '1.0.0' });
  const packageId = (await supertest(m.app).post('/api/packages').set('Authorization', BASIC).field('name', packageName).attach('package', file).expect(201)).body.id as number;
  const operationId = (await supertest(m.app).post('/api/operations').set('Authorization', BASIC).send({ action: 'propagate', package: packageId, servers: 'all' }).expect(202)).body.id as number;
  return { m, payload, packageId, operationId };
}
