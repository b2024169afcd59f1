// Run as a child process by streaming-memory.test: verifies and extracts one package, then prints
// its own peak resident memory, so the test can compare a small package with a large one.
// An optional fourth argument raises the unpack ratio (a payload of zeros unpacks far beyond 10×).
import { extractPayload } from '../../lib/payload-extractor.js';
import { verifyPackage } from '../../lib/package-verifier.js';
import { loadTrustStore } from '../../lib/trust-store.js';

const [file, trustPath, dest, maxRatio] = process.argv.slice(2);
if (!file || !trustPath || !dest) throw new Error('usage: measure-memory PACKAGE TRUST DEST [MAX-RATIO]');
const trust = await loadTrustStore(trustPath);
const verified = await verifyPackage(file, { trust });
const started = Date.now();
try {
  const extracted = await extractPayload(file, { ...verified.payload, unpackedSize: verified.manifest.unpackedSize }, dest, maxRatio ? { maxRatio: Number(maxRatio) } : {});
  process.stdout.write(JSON.stringify({ maxRssKb: process.resourceUsage().maxRSS, payloadSize: verified.payload.size, bytes: extracted.bytes, ms: Date.now() - started }));
} catch (err) {
  process.stdout.write(JSON.stringify({ maxRssKb: process.resourceUsage().maxRSS, payloadSize: verified.payload.size, error: (err as Error).message, ms: Date.now() - started }));
}
