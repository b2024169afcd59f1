// Run as a child process by streaming-memory.test: verifies and extracts one package, then prints
// its own peak resident memory, so the test can compare a small package with a large one.
import { extractPayload } from '../../lib/payload-extractor.js';
import { verifyPackage } from '../../lib/package-verifier.js';
import { loadTrustStore } from '../../lib/trust-store.js';

const [file, trustPath, dest] = process.argv.slice(2);
if (!file || !trustPath || !dest) throw new Error('usage: measure-memory PACKAGE TRUST DEST');
const trust = await loadTrustStore(trustPath);
const verified = await verifyPackage(file, { trust });
const extracted = await extractPayload(file, verified.payload, dest);
process.stdout.write(JSON.stringify({ maxRssKb: process.resourceUsage().maxRSS, payloadSize: verified.payload.size, bytes: extracted.bytes }));
