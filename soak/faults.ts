import { restart, type Fleet } from './fleet.js';
import { sleep, type Random } from './random.js';

export type FaultKind = 'agent-kill' | 'reset' | 'master-kill' | 'master-pause';

export interface FaultPlan {
  /** No new fault after this (ms since the epoch). */
  endAt: number;
  /**
   * No master kill after this: the master's last run (the second half of the faults and the
   * settling) is long enough to tell a leak from noise. Pauses go on: they do not restart it.
   */
  masterKillsUntil: number;
  /** Now and then a master outage longer than the agents' eight download tries (about a minute). */
  longOutages: boolean;
}

/**
 * Injects faults at random, one every 3–10 s: an agent killed with SIGKILL and started again after
 * 0.5–8 s (several may be down at once), every connection through the agents' proxy reset, the
 * master killed with SIGKILL and started again on the same data folder and port after 1–15 s (or
 * 60–90 s; in the first half only), the master stopped with SIGSTOP for 3–15 s. Half the resets, master kills and pauses
 * strike while a download is in flight, when one comes within 20 s.
 */
export class FaultInjector {
  readonly counts: Record<FaultKind, number> = { 'agent-kill': 0, reset: 0, 'master-kill': 0, 'master-pause': 0 };
  private readonly restarts = new Set<Promise<void>>();

  constructor(private readonly fleet: Fleet, private readonly random: Random, private readonly plan: FaultPlan, private readonly say: (line: string) => void) {}

  async run(): Promise<void> {
    for (;;) {
      const wait = this.random.between(3_000, 10_000);
      if (Date.now() + wait >= this.plan.endAt) return;
      await sleep(wait);
      const kills = Date.now() < this.plan.masterKillsUntil;
      const kind = this.random.weighted<FaultKind>({ 'agent-kill': 4, reset: 3, 'master-kill': kills ? 2 : 0, 'master-pause': 1 });
      this.counts[kind]++;
      // Half the faults on the master's side wait (a while at most) for a download in flight.
      if (kind !== 'agent-kill' && this.random.chance(0.5)) await this.downloadInFlight(20_000);
      await this.inject(kind);
    }
  }

  /** Waits until the proxy carries a download (over 1 MB a second), or for `limitMs` at most. */
  private async downloadInFlight(limitMs: number): Promise<void> {
    const giveUp = Date.now() + Math.min(limitMs, this.plan.endAt - Date.now());
    while (Date.now() < giveUp) {
      const before = this.fleet.proxy.relayed();
      await sleep(500);
      if (this.fleet.proxy.relayed() - before > 512 * 1024) return;
    }
  }

  private async inject(kind: FaultKind): Promise<void> {
    const { fleet, random } = this;
    if (kind === 'reset') {
      this.say(`fault: reset ${fleet.proxy.resetAll()} agent connections`);
      return;
    }
    if (kind === 'agent-kill') {
      const alive = fleet.agents.filter((a) => a.process.running());
      if (alive.length === 0) return;
      const agent = random.pick(alive);
      const downMs = random.between(500, 8_000);
      await agent.process.kill('SIGKILL');
      this.say(`fault: SIGKILL ${agent.name}, back in ${(downMs / 1000).toFixed(1)} s`);
      const back = sleep(downMs).then(() => restart(agent.process)).catch((err: unknown) => this.say(`could not restart ${agent.name}: ${(err as Error).message}`));
      this.restarts.add(back);
      void back.finally(() => this.restarts.delete(back));
      return;
    }
    if (kind === 'master-kill') {
      const long = this.plan.longOutages && random.chance(0.15);
      const downMs = long ? random.between(60_000, 90_000) : random.between(1_000, 15_000);
      await fleet.master.kill('SIGKILL');
      this.say(`fault: SIGKILL master, back in ${(downMs / 1000).toFixed(1)} s`);
      await sleep(downMs);
      await restart(fleet.master);
      this.say(`master started again (start ${fleet.master.starts})`);
      return;
    }
    const pausedMs = random.between(3_000, 15_000);
    fleet.master.pause();
    this.say(`fault: SIGSTOP master for ${(pausedMs / 1000).toFixed(1)} s`);
    await sleep(pausedMs);
    fleet.master.resume();
  }

  /** After the last fault: the master running, and every agent running again. */
  async heal(): Promise<void> {
    await Promise.all(this.restarts);
    this.fleet.master.resume();
    if (!this.fleet.master.running()) await restart(this.fleet.master);
    await Promise.all(this.fleet.agents.filter((a) => !a.process.running()).map((a) => restart(a.process)));
  }
}
