import { readdir, readFile } from 'node:fs/promises';

/**
 * What Linux says about processes (/proc), to tell a process we started from another one that got
 * its number later: a pid is reused, a pid and its start time (clock ticks since boot, field 22 of
 * /proc/PID/stat) within one boot never are. Elsewhere (no /proc) every answer is null or empty.
 */
export interface ProcessStamp {
  pid: number;
  /** Field 22 of /proc/PID/stat. */
  startTime: number;
  /** /proc/sys/kernel/random/boot_id: start times count from the boot. */
  bootId: string;
}

interface StatFields {
  /** R, S, D, Z (a zombie: dead, waiting for its parent to reap it)... */
  state: string;
  pgrp: number;
  startTime: number;
}

/** Fields after the command name, which may hold spaces and parentheses: split after the last ")". */
function parseStat(text: string): StatFields | null {
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state): field 5 (pgrp) is fields[2], field 22 (starttime) fields[19].
  const pgrp = Number(fields[2]);
  const startTime = Number(fields[19]);
  return Number.isInteger(pgrp) && Number.isInteger(startTime) ? { state: fields[0] ?? '', pgrp, startTime } : null;
}

async function readStat(pid: number): Promise<StatFields | null> {
  return readFile(`/proc/${pid}/stat`, 'utf8').then(parseStat, () => null);
}

let cachedBootId: string | null = null;

export async function bootId(): Promise<string> {
  cachedBootId ??= await readFile('/proc/sys/kernel/random/boot_id', 'utf8').then((t) => t.trim(), () => 'unknown');
  return cachedBootId;
}

/** The stamp of a live process; null once it is gone (or without /proc). */
export async function processStamp(pid: number): Promise<ProcessStamp | null> {
  const stat = await readStat(pid);
  return stat ? { pid, startTime: stat.startTime, bootId: await bootId() } : null;
}

/** Whether the process the stamp was taken of still runs (not merely a process with its number). */
export async function stillRuns(stamp: ProcessStamp): Promise<boolean> {
  const now = await processStamp(stamp.pid);
  return now !== null && now.startTime === stamp.startTime && now.bootId === stamp.bootId;
}

/** The live processes of a process group (zombies are dead already), with their start times. */
export async function groupMembers(pgid: number): Promise<{ pid: number; startTime: number }[]> {
  const entries = await readdir('/proc').catch(() => [] as string[]);
  const members: { pid: number; startTime: number }[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readStat(Number(entry));
    if (stat?.pgrp === pgid && stat.state !== 'Z') members.push({ pid: Number(entry), startTime: stat.startTime });
  }
  return members;
}
