import assert from 'node:assert/strict';
import { it } from 'node:test';
import { loadMasterConfig, parseSize } from '../server/config.js';

it('reads flags over environment over defaults', () => {
  const defaults = loadMasterConfig([], {}, '/srv/propagator');
  assert.deepEqual(
    [defaults.host, defaults.port, defaults.dataDir, defaults.trustPath, defaults.product, defaults.productVersion, defaults.maxUploadBytes, defaults.tlsCert],
    ['0.0.0.0', 8080, '/srv/propagator/data', '/srv/propagator/certs/trusted', null, null, 4 * 1024 ** 3, null],
  );
  assert.ok(Object.isFrozen(defaults));
  const env = { PROPAGATOR_PORT: '9000', PROPAGATOR_DATA_DIR: '/var/lib/propagator', PROPAGATOR_PRODUCT_VERSION: '6.1', PROPAGATOR_MAX_UPLOAD: '500MiB' };
  const fromEnv = loadMasterConfig([], env, '/srv');
  assert.deepEqual([fromEnv.port, fromEnv.dataDir, fromEnv.productVersion, fromEnv.maxUploadBytes], [9000, '/var/lib/propagator', '6.1', 500 * 1024 ** 2]);
  const fromFlags = loadMasterConfig(['--port', '9100', '--product-version', '6.2.1', '--data', 'here'], env, '/srv');
  assert.deepEqual([fromFlags.port, fromFlags.dataDir, fromFlags.productVersion], [9100, '/srv/here', '6.2.1']);
});

it('takes secrets from the environment only', () => {
  const config = loadMasterConfig([], { PROPAGATOR_ADMIN_PASSWORD: 'pw', PROPAGATOR_ENROLL_TOKEN: 'tok' });
  assert.deepEqual([config.adminPassword, config.enrollToken], ['pw', 'tok']);
  assert.throws(() => loadMasterConfig(['--admin-password', 'pw'], {}), /Unknown option '--admin-password'/);
});

it('explains bad values', () => {
  assert.throws(() => loadMasterConfig(['--port', 'eighty'], {}), { message: 'port must be a number' });
  assert.throws(() => loadMasterConfig(['--port', '70000'], {}), { message: 'port must be 0 to 65535' });
  assert.throws(() => loadMasterConfig(['--product-version', 'six'], {}), { message: 'product version must be 1 to 4 dot-separated numbers' });
  assert.throws(() => loadMasterConfig(['--tls-cert', 'a.pem'], {}), { message: '--tls-cert and --tls-key go together' });
  assert.throws(() => loadMasterConfig(['--max-upload', 'lots'], {}), { message: 'not a size: "lots" (examples: 4GiB, 500MiB, 1048576)' });
  assert.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3);
});

it('reads the upload cap and the idle timeout, and derives the HTTP timeouts from it', () => {
  const defaults = loadMasterConfig([], {});
  assert.deepEqual(
    [defaults.maxParallelUploads, defaults.idleTimeoutMs, defaults.headersTimeoutMs, defaults.requestTimeoutMs],
    [4, 60_000, 20_000, 30_000],
  );
  const fromEnv = loadMasterConfig([], { PROPAGATOR_MAX_PARALLEL_UPLOADS: '2', PROPAGATOR_UPLOAD_IDLE_TIMEOUT: '90' });
  assert.deepEqual([fromEnv.maxParallelUploads, fromEnv.idleTimeoutMs, fromEnv.headersTimeoutMs], [2, 90_000, 20_000]);
  const short = loadMasterConfig(['--max-parallel-uploads', '1', '--upload-idle-timeout', '2.5'], { PROPAGATOR_MAX_PARALLEL_UPLOADS: '2' });
  assert.deepEqual(
    [short.maxParallelUploads, short.idleTimeoutMs, short.headersTimeoutMs, short.requestTimeoutMs],
    [1, 2_500, 2_500, 2_500],
  );
  assert.throws(() => loadMasterConfig(['--max-parallel-uploads', '0'], {}), { message: 'max parallel uploads must be 1 or more' });
  assert.throws(() => loadMasterConfig(['--max-parallel-uploads', '1.5'], {}), { message: 'max parallel uploads must be a whole number' });
  assert.throws(() => loadMasterConfig(['--max-parallel-uploads', 'many'], {}), { message: 'max parallel uploads must be a number' });
  assert.throws(() => loadMasterConfig(['--upload-idle-timeout', '0'], {}), { message: 'the upload idle timeout must be more than 0 seconds' });
  assert.throws(() => loadMasterConfig(['--upload-idle-timeout', 'soon'], {}), { message: 'the upload idle timeout must be a number of seconds' });
});

it('reads the database and the balancers to believe', () => {
  const defaults = loadMasterConfig([], {}, '/srv/propagator');
  assert.deepEqual([defaults.database, defaults.trustProxy], [{ engine: 'sqlite', file: '/srv/propagator/data/propagator.sqlite' }, []]);
  const cluster = loadMasterConfig(['--trust-proxy', '127.0.0.1, 10.0.0.0/8,loopback, ::1'], { PROPAGATOR_DATABASE_URL: 'postgres://propagator@db/prop' });
  assert.deepEqual([cluster.database, cluster.trustProxy], [{ engine: 'postgres', url: 'postgres://propagator@db/prop' }, ['127.0.0.1', '10.0.0.0/8', 'loopback', '::1']]);
  for (const bad of ['balancer.example', '10.0.0.0/33', '10.0.0.1/8/8', 'everyone']) {
    assert.throws(() => loadMasterConfig(['--trust-proxy', bad], {}), { message: `--trust-proxy: "${bad}" is not an address, a CIDR range (10.0.0.0/8) or one of loopback, linklocal, uniquelocal` });
  }
});
