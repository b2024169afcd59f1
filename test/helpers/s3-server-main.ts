// An S3-protocol server for the tests, in a process of its own (so a test can kill it like a real
// bucket service going away): s3rver on a loopback port, its objects under a folder, the buckets
// named on the command line created at start. Prints "s3rver listening on PORT" when it listens.
import S3rver from 's3rver';

const [directory, port, ...buckets] = process.argv.slice(2);
if (!directory || port === undefined) throw new Error('usage: s3-server-main DIRECTORY PORT [BUCKET...]');
const server = new S3rver({ address: '127.0.0.1', port: Number(port), directory, silent: true, configureBuckets: buckets.map((name) => ({ name, configs: [] })) });
const address = await server.run();
process.stdout.write(`s3rver listening on ${address.port}\n`);
process.on('SIGTERM', () => {
  void server.close().finally(() => process.exit(0));
});
