import { appendFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadAgentConfig } from '../agent/config.js';
import { startAgent, type RunningAgent } from '../agent/main.js';
import { writeDevCertificates } from '../lib/dev-certs.js';
import { createLogger } from '../lib/logger.js';
import { buildPackage } from '../lib/package-builder.js';
import { randomToken } from '../server/secrets.js';
import { loadMasterConfig } from '../server/config.js';
import { startMaster, type RunningMaster } from '../server/main.js';
import { untilSignal, type CliIo } from './io.js';

export const DEMO_HELP = `propagator demo [--dir DIR] [--port N]
    Starts a whole domain on this machine: a master (http://localhost:8080 by default) and three
    slave agents (one bidirectional, two mailbox), with a development PKI and two signed sample
    packages (6.1.0, which the slaves run, and 6.2.0, already uploaded). Data in ./demo-data,
    wiped at every start. Ctrl-C stops everything.`;

const SLAVE_VERSION = '6.1.0';
const NEW_VERSION = '6.2.0';

/** A small but real release of the sample product, with hooks that leave a trace. */
async function writeSampleRelease(dir: string, version: string): Promise<void> {
  await mkdir(path.join(dir, 'hooks'), { recursive: true });
  await writeFile(path.join(dir, 'watchdoc.conf'), `# Watchdoc print server (demo release)\nversion=${version}\nspool=/var/spool/watchdoc\n`);
  await writeFile(path.join(dir, 'README.txt'), `Demo release ${version} of the sample product, installed by Propagator.\n`);
  await writeFile(path.join(dir, 'hooks', 'apply'), '#!/bin/sh\necho "installing $UPDATE_PRODUCT $UPDATE_VERSION (was $UPDATE_PREVIOUS_VERSION) in $UPDATE_RELEASE_DIR"\n', { mode: 0o755 });
  await writeFile(path.join(dir, 'hooks', 'health'), '#!/bin/sh\ntest -f watchdoc.conf && echo "watchdoc $UPDATE_VERSION is healthy"\n', { mode: 0o755 });
}

/** Runs the demo until SIGINT/SIGTERM. */
export async function demoCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({ args, options: { dir: { type: 'string' }, port: { type: 'string' } } });
  const root = path.resolve(values.dir ?? 'demo-data');
  const port = values.port ?? io.env.PROPAGATOR_DEMO_PORT ?? '8080';
  await rm(root, { recursive: true, force: true });
  await mkdir(root, { recursive: true });
  const logFile = path.join(root, 'demo.log');
  const fileLog = (base: Record<string, string>) => createLogger({ level: 'info', base, write: (line) => void appendFile(logFile, `${line}\n`) });

  io.out('Creating a development PKI and two signed sample packages…');
  const certs = await writeDevCertificates(path.join(root, 'certs'));
  const trust = path.dirname(certs.rootCert);
  const packages: Record<string, string> = {};
  for (const version of [SLAVE_VERSION, NEW_VERSION]) {
    const payload = path.join(root, 'releases', version);
    await writeSampleRelease(payload, version);
    const out = path.join(root, `watchdoc-${version}.pkg`);
    await buildPackage({ payloadDir: payload, product: 'watchdoc', version, keyFile: certs.publisherKey, chainFile: certs.publisherChain, outFile: out, description: `Demo release ${version}` });
    packages[version] = out;
  }

  const password = randomToken(12);
  const token = randomToken(24);
  let master: RunningMaster | null = null;
  const agents: RunningAgent[] = [];
  const stopAll = async () => {
    await Promise.all(agents.map((a) => a.close()));
    await master?.close();
  };
  try {
    const masterConfig = loadMasterConfig(['--host', '127.0.0.1', `--port=${port}`, `--data=${path.join(root, 'master')}`, `--trust=${trust}`, '--name', 'master',
      '--product-version', NEW_VERSION, '--auto-accept'], { PROPAGATOR_ADMIN_PASSWORD: password, PROPAGATOR_ENROLL_TOKEN: token });
    master = await startMaster(masterConfig, { log: fileLog({ process: 'master' }), announce: () => undefined });
    const slaves: [string, 'bidirectional' | 'mailbox'][] = [['print-paris', 'bidirectional'], ['print-lyon', 'mailbox'], ['print-nantes', 'mailbox']];
    for (const [name, mode] of slaves) {
      const config = loadAgentConfig([`--master=${master.url}`, '--name', name, '--mode', mode, `--data=${path.join(root, 'agents', name)}`, `--trust=${trust}`,
        '--initial-version', SLAVE_VERSION, '--host', '127.0.0.1', '--port', '0', '--poll-min', '1', '--poll-max', '5', '--heartbeat', '5'], { PROPAGATOR_ENROLL_TOKEN: token });
      agents.push(await startAgent(config, { log: fileLog({ process: name }) }));
    }
    const form = new FormData();
    form.set('name', `Watchdoc ${NEW_VERSION} (demo)`);
    // The sample package is a few kilobytes; a real upload streams (see the README's curl example).
    form.set('package', new Blob([await readFile(packages[NEW_VERSION] as string)]), `watchdoc-${NEW_VERSION}.pkg`);
    const uploaded = await fetch(`${master.url}/api/packages`, { method: 'POST', body: form, headers: { authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` } });
    if (uploaded.status !== 201) throw new Error(`the demo could not upload its package: ${await uploaded.text()}`);
  } catch (err) {
    // Whatever started must stop, or the demo would hang on its open ports.
    await stopAll();
    throw err;
  }
  const url = master.url;

  io.out(`
Propagator demo is running.

  Console:   ${url}
  Log in as: admin / ${password}

  The master runs watchdoc ${NEW_VERSION}; three slaves (print-paris: bidirectional, print-lyon and
  print-nantes: mailbox) run ${SLAVE_VERSION}. The ${NEW_VERSION} package is uploaded and verified.
  In the console: Propagate → choose it, All servers, Validate; then Apply the same way. Watch the
  report, then Print servers: every server at ${NEW_VERSION}, green banner.

  Also there: ${packages[SLAVE_VERSION]} (the slaves' version) and the development PKI in
  ${path.join(root, 'certs')} to sign your own packages. Logs: ${logFile}
  Ctrl-C stops everything.`);

  await untilSignal();
  io.out('\nStopping the agents and the master…');
  await stopAll();
  io.out('Stopped.');
  return 0;
}
