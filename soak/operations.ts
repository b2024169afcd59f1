import { rm } from 'node:fs/promises';
import type { Publisher } from '../test/helpers/test-pki.js';
import type { AdminApi, OperationRow, TargetRow } from './api.js';
import { buildPackage, type PackageKind } from './packages.js';
import { sleep, type Random } from './random.js';

export interface FinishedOperation {
  id: number;
  action: OperationRow['action'];
  version: string;
  kind: PackageKind;
  state: OperationRow['state'];
  targets: TargetRow[];
}

/** "succeeded 10" / "succeeded 7, timedout 3" */
export function tally(targets: TargetRow[]): string {
  const counts = new Map<string, number>();
  for (const t of targets) counts.set(t.state, (counts.get(t.state) ?? 0) + 1);
  return [...counts.entries()].map(([state, n]) => `${state} ${n}`).join(', ');
}

/**
 * What an administrator does all day, in a loop: add the next version (small mostly, every fourth
 * a big one, now and then one whose health check fails), propagate it to all servers (not always: apply stages
 * first), apply it to all, and delete the updates no longer needed. Each operation is followed
 * until it ends, or for at most `waitCapMs` (then it is noted and the loop goes on).
 */
export class OperationsLoop {
  round = 0;
  readonly finished: FinishedOperation[] = [];
  /** When the last operation of a big package ended (ms since the epoch; 0: none yet). */
  lastBigEndedAt = 0;
  readonly problems: string[] = [];

  constructor(
    private readonly api: AdminApi,
    private readonly work: string,
    private readonly publisher: Publisher,
    private readonly random: Random,
    private readonly waitCapMs: number,
    private readonly say: (line: string) => void,
  ) {}

  async run(keepGoing: () => boolean): Promise<void> {
    while (keepGoing()) {
      this.round++;
      // Every fourth round is big, so every run of the master serves some (see flatness.ts).
      const kind: PackageKind = this.round % 4 === 3 ? 'big' : this.random.weighted<'small' | 'unhealthy'>({ small: 5, unhealthy: 1 });
      const propagateFirst = this.random.chance(0.7);
      const pkg = await buildPackage(this.work, this.publisher, this.round, kind);
      const row = await this.api.upload(pkg.file);
      await rm(pkg.file, { force: true });
      for (const action of propagateFirst ? (['propagate', 'apply'] as const) : (['apply'] as const)) {
        const id = await this.api.startOperation(action, row.id);
        const op = await this.follow(id);
        this.finished.push({ id, action, version: pkg.version, kind, state: op.state, targets: op.targets ?? [] });
        if (kind === 'big') this.lastBigEndedAt = Date.now();
        this.say(`round ${this.round}: ${action} ${pkg.version} (${kind}) #${id} ${op.state}: ${tally(op.targets ?? [])}`);
      }
      await this.deleteUpdates((p) => p !== row.id);
    }
  }

  /** Follows an operation until it ends (or the cap); its last report. */
  private async follow(id: number): Promise<OperationRow> {
    const giveUp = Date.now() + this.waitCapMs;
    for (;;) {
      const op = await this.api.operation(id);
      if (op.state !== 'running') return op;
      if (Date.now() > giveUp) {
        this.problems.push(`operation #${id} (${op.action} ${op.package.version}) still running after ${Math.round(this.waitCapMs / 1000)} s: ${tally(op.targets ?? [])}`);
        return op;
      }
      await sleep(1000);
    }
  }

  /** Deletes the updates chosen (those an open operation uses answer 409 and stay for next time); how many are left. */
  async deleteUpdates(which: (id: number) => boolean): Promise<number> {
    let left = 0;
    for (const p of (await this.api.packages()).filter((x) => which(x.id))) {
      const answer = await this.api.call('DELETE', `/api/packages/${p.id}`);
      if (answer.status === 409) left++;
      else if (answer.status !== 204 && answer.status !== 404) this.problems.push(`deleting update ${p.name} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
    }
    return left;
  }
}
