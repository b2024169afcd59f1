import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project folder (holding views/, public/), found from this compiled file in dist/lib/. */
export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
