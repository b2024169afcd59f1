// A master for the benchmarks: the real app, in one process, with references beside it:
// GET /bench/noop, the "trivial express route in the same master process" the mailbox figures are
// compared with, and /bench/unsigned/api/agent/*, the agent routes with unsigned answers. Run by
// bench scenarios as a child process; prints its URL when it listens.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { createApp, frontMiddleware } from '../server/app.js';
import { agentRouter } from '../server/routes/agent-router.js';
import { loadMasterConfig } from '../server/config.js';
import { createCluster } from '../server/cluster/create-cluster.js';
import { openDatabase } from '../server/db/open-database.js';
import { createLogger } from '../lib/logger.js';
import { openPackageStore } from '../server/open-store.js';
import { bootstrapMaster, createServices } from '../server/services.js';

const config = loadMasterConfig(process.argv.slice(2), process.env);
const log = createLogger({ level: 'warn' });
const store = await openPackageStore(config);
await store.init();
const db = await openDatabase(config.database);
const cluster = createCluster(db, config.database, log, config.name);
const services = createServices({ config, db, store, log, cluster });
await bootstrapMaster(services, config);
const root = express();
root.get('/bench/noop', (_req, res) => {
  res.json({ ok: true });
});
// The agent routes at the root, as in the master (the app below is mounted as a sub-app, which
// costs express a prototype swap per request that the master itself never pays), and beside them
// their reference: the same routes, answers unsigned. Both behind the master's own front middleware.
const agentDeps = { agents: services.agents, admission: services.admission, store, key: services.masterKey, enrollAttemptsPerWindow: config.loginAttemptsPerWindow, replays: services.replays, log };
root.use('/bench/unsigned', frontMiddleware(config, log), agentRouter({ ...agentDeps, signAnswers: false }));
const agentStack = express.Router().use(frontMiddleware(config, log), agentRouter(agentDeps));
root.use((req, res, next) => (req.path.startsWith('/api/agent/') ? agentStack(req, res, next) : next()));
root.use(createApp({ config, db, store, log, services }));
const server = http.createServer(root);
server.keepAliveTimeout = 30_000;
await cluster.start();
server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`LISTENING http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
process.on('SIGTERM', () => {
  server.close();
  void cluster.stop().then(() => services.agents.flush()).then(() => db.close()).then(() => process.exit(0));
});
