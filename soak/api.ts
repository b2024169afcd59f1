import { createHash } from 'node:crypto';
import { openAsBlob } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { sleep } from './random.js';

export interface PackageRow {
  id: number;
  name: string;
  version: string;
  sha256: string;
}

export type TargetState = 'held' | 'queued' | 'delivered' | 'running' | 'succeeded' | 'failed' | 'timedout' | 'cancelled';

export interface TargetRow {
  server: string;
  serverId: number | null;
  mode: string | null;
  state: TargetState;
  message: string;
  versionBefore: string | null;
  versionAfter: string | null;
  finishedAt: string | null;
}

export interface OperationRow {
  id: number;
  action: 'propagate' | 'apply';
  package: { id: number | null; name: string; version: string };
  state: 'running' | 'succeeded' | 'failed' | 'cancelled';
  createdAt: string;
  targets?: TargetRow[];
}

export interface ServerRow {
  id: number;
  name: string;
  role: 'master' | 'slave';
  mode: 'bidirectional' | 'mailbox' | null;
  version: string | null;
  staged: unknown[];
}

interface Answer {
  status: number;
  body: unknown;
}

/** Down, paused or restarting masters: how long a call keeps trying before it gives up. */
const PATIENCE_MS = 5 * 60_000;
/** Longer than any pause the soak injects, so a paused master's request is never sent twice. */
const REQUEST_TIMEOUT_MS = 90_000;

/**
 * The administrator's REST client, talking to the master directly (not through the agents' proxy).
 * A call that cannot reach the master is tried again until it can: the master is down on purpose.
 */
export class AdminApi {
  private readonly auth: string;

  constructor(readonly url: string, password: string) {
    this.auth = `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`;
  }

  async request(method: string, route: string, body?: FormData | object): Promise<Answer> {
    const json = body !== undefined && !(body instanceof FormData);
    const res = await fetch(`${this.url}${route}`, {
      method,
      headers: { authorization: this.auth, ...(json ? { 'content-type': 'application/json' } : {}) },
      body: json ? JSON.stringify(body) : body,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // Not JSON: kept as text for the message.
    }
    return { status: res.status, body: parsed };
  }

  /** The request, tried again while the master cannot be reached. */
  async call(method: string, route: string, body?: FormData | object): Promise<Answer> {
    const giveUp = Date.now() + PATIENCE_MS;
    for (;;) {
      try {
        return await this.request(method, route, body);
      } catch (err) {
        if (Date.now() > giveUp) throw new Error(`${method} ${route}: the master could not be reached for ${PATIENCE_MS / 60_000} minutes`, { cause: err });
        await sleep(1000);
      }
    }
  }

  async expect<T>(method: string, route: string, status: number, body?: object): Promise<T> {
    const answer = await this.call(method, route, body);
    if (answer.status !== status) throw new Error(`${method} ${route} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
    return answer.body as T;
  }

  packages(): Promise<PackageRow[]> {
    return this.expect<PackageRow[]>('GET', '/api/packages', 200);
  }

  servers(): Promise<ServerRow[]> {
    return this.expect<ServerRow[]>('GET', '/api/servers', 200);
  }

  operation(id: number): Promise<OperationRow> {
    return this.expect<OperationRow>('GET', `/api/operations/${id}`, 200);
  }

  /** Every operation, newest first, without targets. */
  async operations(state?: 'running'): Promise<OperationRow[]> {
    const all: OperationRow[] = [];
    for (let offset = 0; ; offset += 500) {
      const page = await this.expect<OperationRow[]>('GET', `/api/operations?limit=500&offset=${offset}${state ? `&state=${state}` : ''}`, 200);
      all.push(...page);
      if (page.length < 500) return all;
    }
  }

  /**
   * Uploads a package. A master killed after it stored the file but before it answered makes the
   * retry a 409: the package is then found by its SHA-256.
   */
  async upload(file: string): Promise<PackageRow> {
    const sha256 = createHash('sha256').update(await readFile(file)).digest('hex');
    const giveUp = Date.now() + PATIENCE_MS;
    for (;;) {
      const form = new FormData();
      form.set('name', path.basename(file, '.pkg'));
      form.set('package', await openAsBlob(file), path.basename(file));
      const answer = await this.request('POST', '/api/packages', form).catch((err: unknown) => err as Error);
      if (!(answer instanceof Error)) {
        if (answer.status === 201) return answer.body as PackageRow;
        const stored = (await this.packages()).find((p) => p.sha256 === sha256);
        if (answer.status === 409 && stored) return stored;
        throw new Error(`the upload of ${path.basename(file)} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
      }
      if (Date.now() > giveUp) throw new Error(`the upload of ${path.basename(file)} could not reach the master`, { cause: answer });
      await sleep(1000);
    }
  }

  /**
   * Starts an operation once. When the request fails on the way (the master killed), the master
   * may have created it before dying: it is looked for before asking again.
   */
  async startOperation(action: OperationRow['action'], packageId: number): Promise<number> {
    const giveUp = Date.now() + PATIENCE_MS;
    for (;;) {
      const answer = await this.request('POST', '/api/operations', { action, package: packageId, servers: 'all' }).catch((err: unknown) => err as Error);
      if (!(answer instanceof Error)) {
        if (answer.status === 202) return (answer.body as { id: number }).id;
        throw new Error(`starting ${action} of package ${packageId} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
      }
      const made = (await this.expect<OperationRow[]>('GET', '/api/operations?limit=20', 200)).find((o) => o.action === action && o.package.id === packageId);
      if (made) return made.id;
      if (Date.now() > giveUp) throw new Error(`starting ${action} of package ${packageId}: the master could not be reached`, { cause: answer });
      await sleep(1000);
    }
  }
}
