import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { BIN } from '../test/helpers/run.js';

export interface ProcessSpec {
  /** "master", "bidi-1"… */
  name: string;
  /** `propagator` arguments (master … / agent …). */
  args: string[];
  env: NodeJS.ProcessEnv;
  /** Where its output goes, appended across restarts. */
  logFile: string;
  /** The line on stderr that says it is up. */
  ready: RegExp;
}

const READY_TIMEOUT_MS = 60_000;
const TAIL_LINES = 25;

/**
 * A real `propagator` process the soak starts, kills, pauses and starts again. Its output goes to
 * a log file (a soak runs for half an hour: nothing piles up in memory but the last lines). An
 * exit the soak did not cause is recorded and reported to `onUnexpectedExit`.
 */
export class ManagedProcess {
  child: ChildProcess | null = null;
  /** Starts so far (1 after the first start). */
  starts = 0;
  /** When the current run announced itself ready (ms since the epoch; 0 until it has). */
  readyAt = 0;
  readonly unexpectedExits: string[] = [];
  onUnexpectedExit: () => void = () => undefined;
  private expected = false;
  private paused = false;
  /** Once retired (the soak ends), it is never started again, whatever restart was pending. */
  private retired = false;
  private tail: string[] = [];
  private readonly log: WriteStream;

  constructor(readonly spec: ProcessSpec) {
    this.log = createWriteStream(spec.logFile, { flags: 'a' });
  }

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  isRetired(): boolean {
    return this.retired;
  }

  lastLines(): string {
    return this.tail.join('\n');
  }

  private keep(text: string): void {
    this.log.write(text);
    this.tail.push(...text.split('\n').filter(Boolean));
    if (this.tail.length > TAIL_LINES) this.tail = this.tail.slice(-TAIL_LINES);
  }

  /** Starts it and waits for its ready line; resolves with that line's match. */
  start(): Promise<RegExpExecArray> {
    if (this.retired) return Promise.reject(new Error(`${this.spec.name} is retired: the soak is ending`));
    if (this.running()) throw new Error(`${this.spec.name} is running already`);
    this.starts++;
    this.readyAt = 0;
    this.expected = false;
    this.paused = false;
    this.log.write(`=== ${this.spec.name} start ${this.starts} at ${new Date().toISOString()} ===\n`);
    const child = spawn(process.execPath, [BIN, ...this.spec.args], { env: { ...process.env, ...this.spec.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    let early = '';
    let matched = false;
    const ready = new Promise<RegExpExecArray>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.spec.name} did not start within ${READY_TIMEOUT_MS / 1000} s:\n${this.lastLines()}`)), READY_TIMEOUT_MS);
      child.stdout?.on('data', (c: Buffer) => this.keep(c.toString()));
      child.stderr?.on('data', (c: Buffer) => {
        const text = c.toString();
        this.keep(text);
        if (matched) return;
        early += text;
        const match = this.spec.ready.exec(early);
        if (match) {
          matched = true;
          early = '';
          this.readyAt = Date.now();
          clearTimeout(timer);
          resolve(match);
        }
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        this.log.write(`=== ${this.spec.name} exited (${signal ?? `code ${code}`}) at ${new Date().toISOString()} ===\n`);
        if (!this.expected) {
          this.unexpectedExits.push(`${this.spec.name} exited by itself (${signal ?? `code ${code}`}) at ${new Date().toISOString()}; its last lines:\n${this.lastLines()}`);
          reject(new Error(`${this.spec.name} exited (${signal ?? `code ${code}`}) before it was ready:\n${this.lastLines()}`));
          this.onUnexpectedExit();
        }
      });
    });
    ready.catch(() => undefined);
    return ready;
  }

  private exited(): Promise<void> {
    const child = this.child;
    if (!child || !this.running()) return Promise.resolve();
    return new Promise((resolve) => child.once('exit', () => resolve()));
  }

  /** Kills it (SIGKILL unless told otherwise) and waits for the exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.running()) return;
    this.expected = true;
    const gone = this.exited();
    this.child?.kill(signal);
    // A stopped process takes SIGKILL, but SIGTERM only once it runs again.
    if (this.paused && signal !== 'SIGKILL') this.resume();
    await gone;
    this.paused = false;
  }

  /** Asks it to stop for good (SIGTERM), then kills it if it has not within the grace. */
  async stop(graceMs = 40_000): Promise<void> {
    this.retired = true;
    if (!this.running()) return;
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), graceMs);
    await this.kill('SIGTERM');
    clearTimeout(timer);
  }

  pause(): void {
    if (!this.running() || this.paused) return;
    this.child?.kill('SIGSTOP');
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.child?.kill('SIGCONT');
    this.paused = false;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.log.end(() => resolve()));
  }
}
