import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadMasterConfig } from '../server/config.js';

const load = (args: string[], env: NodeJS.ProcessEnv = {}) => loadMasterConfig(['--data', '/srv/data', ...args], env, '/srv');
const fails = (value: string, message: string) => assert.throws(() => load(['--store', value]), { message }, value);

describe('--store', () => {
  it('is DATA/packages by default, or the folder given (shared: any other than DATA/packages)', () => {
    assert.deepEqual(load([]).store, { kind: 'folder', path: '/srv/data/packages', shared: false });
    assert.deepEqual(load(['--store', 'data/packages']).store, { kind: 'folder', path: '/srv/data/packages', shared: false });
    assert.deepEqual(load(['--store', '/mnt/shared/packages']).store, { kind: 'folder', path: '/mnt/shared/packages', shared: true });
    assert.deepEqual(load([], { PROPAGATOR_STORE: 'shared' }).store, { kind: 'folder', path: '/srv/shared', shared: true });
    assert.equal(load([]).storePresignSeconds, null);
  });

  it('reads an s3:// URL with its parameters, and their defaults', () => {
    assert.deepEqual(load(['--store', 's3://packages-eu.example?endpoint=https://s3.example.net:9000/&region=eu-west-3&forcePathStyle=true&prefix=/propagator/prod/&partSize=16MiB']).store, {
      kind: 's3', bucket: 'packages-eu.example', endpoint: 'https://s3.example.net:9000', region: 'eu-west-3', forcePathStyle: true, prefix: 'propagator/prod/', partSize: 16 * 1024 * 1024,
    });
    assert.deepEqual(load([], { PROPAGATOR_STORE: 's3://bucket' }).store, {
      kind: 's3', bucket: 'bucket', endpoint: null, region: 'us-east-1', forcePathStyle: false, prefix: '', partSize: 8 * 1024 * 1024,
    });
    const flagWins = load(['--store', 's3://flag-bucket', '--store-presign', '300'], { PROPAGATOR_STORE: 's3://env-bucket', PROPAGATOR_STORE_PRESIGN: '60' });
    assert.deepEqual([flagWins.store.kind === 's3' && flagWins.store.bucket, flagWins.storePresignSeconds], ['flag-bucket', 300]);
    const smallest = load(['--store', 's3://b-1?partSize=5242880']).store;
    assert.equal(smallest.kind === 's3' ? smallest.partSize : null, 5 * 1024 * 1024);
  });

  it('refuses credentials in the URL without repeating them', () => {
    const message = '--store: the URL must not carry credentials: give them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the URL is shown in process lists and logs)';
    fails('s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket?region=us-east-1', message);
    fails('s3://AKIAEXAMPLE@bucket', message);
    fails('s3://bucket?endpoint=http://AKIAEXAMPLE:wJalrXUtnFEMI@127.0.0.1:9000',
      '--store: the endpoint must not carry credentials: give them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the URL is shown in process lists and logs)');
    for (const value of ['s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket', 's3://bucket?endpoint=http://AKIAEXAMPLE:wJalrXUtnFEMI@host']) {
      assert.throws(() => load(['--store', value]), (err: Error) => !err.message.includes('wJalrXUtnFEMI') && !err.message.includes('AKIAEXAMPLE'));
    }
  });

  it('explains every malformed URL, unknown parameter and bad value', () => {
    const form = 's3://BUCKET?endpoint=URL&region=REGION&forcePathStyle=true&prefix=PATH&partSize=SIZE';
    fails('s3://bucket name', `--store: not a valid S3 URL; expected ${form}`);
    fails('s3://', `--store: the URL names no bucket; expected ${form}`);
    fails('s3:bucket', `--store: the URL names no bucket; expected ${form}`);
    const onlyBucket = '--store: only the bucket goes after s3://; give the server as ?endpoint=URL and the key prefix as ?prefix=PATH';
    fails('s3://bucket/propagator', onlyBucket);
    fails('s3://bucket:9000', onlyBucket);
    fails('s3://bucket#part', onlyBucket);
    const badName = (name: string) => `--store: "${name}" is not a valid bucket name (3 to 63 of a-z 0-9 . -, beginning and ending with a letter or digit)`;
    fails('s3://My_Bucket', badName('My_Bucket'));
    fails('s3://ab', badName('ab'));
    fails('s3://bucket-', badName('bucket-'));
    fails('s3://a..b', badName('a..b'));
    fails(`s3://${'b'.repeat(64)}`, badName(`${'b'.repeat(40)}…`));
    fails('s3://bucket?secretAccessKey=xyz', '--store: unknown parameter "secretAccessKey" (known: endpoint, region, forcePathStyle, prefix, partSize)');
    fails('s3://bucket?Region=eu-west-3', '--store: unknown parameter "Region" (known: endpoint, region, forcePathStyle, prefix, partSize)');
    fails('s3://bucket?region=eu-west-3&region=us-east-1', '--store: parameter "region" is given twice');
    const endpoint = '--store: endpoint must be an http:// or https:// URL (e.g. endpoint=http://127.0.0.1:9000)';
    fails('s3://bucket?endpoint=127.0.0.1:9000', endpoint);
    fails('s3://bucket?endpoint=ftp://127.0.0.1', endpoint);
    fails('s3://bucket?endpoint=', endpoint);
    fails('s3://bucket?endpoint=http://127.0.0.1:9000/%3Fx%3D1', endpoint);
    fails('s3://bucket?region=EU_WEST', '--store: region must be lower-case letters, digits and dashes (e.g. region=us-east-1)');
    fails('s3://bucket?region=', '--store: region must be lower-case letters, digits and dashes (e.g. region=us-east-1)');
    fails('s3://bucket?forcePathStyle=yes', '--store: forcePathStyle must be true or false');
    const prefix = '--store: prefix must be 1 to 200 of A-Z a-z 0-9 ! _ . * \' ( ) - /, with no empty, "." or ".." part';
    fails('s3://bucket?prefix=a/../b', prefix);
    fails('s3://bucket?prefix=a//b', prefix);
    fails('s3://bucket?prefix=/', prefix);
    fails('s3://bucket?prefix=caf%C3%A9', prefix);
    fails(`s3://bucket?prefix=${'p'.repeat(201)}`, prefix);
    const part = '--store: partSize must be 5MiB to 5GiB (e.g. partSize=16MiB)';
    fails('s3://bucket?partSize=1MiB', part);
    fails('s3://bucket?partSize=6GiB', part);
    fails('s3://bucket?partSize=big', part);
    fails('http://127.0.0.1:9000/bucket', '--store: "http://" is not supported; give a folder or an s3:// URL');
    fails('gs://bucket', '--store: "gs://" is not supported; give a folder or an s3:// URL');
    fails('', '--store: empty; give a folder or an s3:// URL');
    fails('  ', '--store: empty; give a folder or an s3:// URL');
    fails('/srv/data', '--store: the package folder cannot be the data folder itself or its tmp folder');
    fails('data/tmp', '--store: the package folder cannot be the data folder itself or its tmp folder');
    fails('/srv/data/tmp/x', '--store: the package folder cannot be the data folder itself or its tmp folder');
  });
});

describe('--store-presign', () => {
  it('is a number of seconds up to 7 days, for a bucket only', () => {
    assert.equal(load(['--store', 's3://bucket', '--store-presign', '604800']).storePresignSeconds, 604_800);
    const range = '--store-presign must be a whole number of seconds from 1 to 604800 (7 days, the most S3 allows)';
    for (const value of ['0', '604801', '1.5', '-1', 'soon', '']) {
      assert.throws(() => load(['--store', 's3://bucket', `--store-presign=${value}`]), { message: range }, value);
    }
    assert.throws(() => load(['--store-presign', '60']), { message: '--store-presign needs an s3:// store: packages in a folder are always served through the master' });
    assert.throws(() => load(['--store', '/mnt/shared'], { PROPAGATOR_STORE_PRESIGN: '60' }), { message: '--store-presign needs an s3:// store: packages in a folder are always served through the master' });
  });
});
