/**
 * The record of a job's process groups, which lets the launcher end a build
 * whose runner died. The runner starts every build command in a session and
 * process group of its own, so killing the runner leaves those groups
 * running. The runner appends each group id to `<state dir>/process-groups`,
 * one decimal pid per line, right after the spawn. The launcher reads the file
 * after the runner exits, or when it finds a runner left by an earlier run,
 * and kills each group that still belongs to the build. Processes that left
 * their group (setsid, daemons such as gpg-agent) are not in the record, so
 * {@link killProcessesByHome} finds them by the build's HOME instead.
 */
import { appendFileSync } from 'node:fs';
import { readFile, readdir, readlink, rm } from 'node:fs/promises';
import path from 'node:path';

export const PROCESS_GROUPS_FILE = 'process-groups';

/**
 * Appends a process group id to the state folder's record. It writes
 * synchronously, so the id is on disk before the runner can be killed
 * after the spawn returns.
 */
export function recordProcessGroup(stateDir: string, processGroup: number): void {
  appendFileSync(path.join(stateDir, PROCESS_GROUPS_FILE), `${processGroup}\n`);
}

/** Returns the process group ids in a state folder's record, or none when there is no record. */
export async function readProcessGroups(stateDir: string): Promise<number[]> {
  let text: string;
  try {
    text = await readFile(path.join(stateDir, PROCESS_GROUPS_FILE), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return [];
    }
    throw error;
  }
  const groups = text
    .split('\n')
    .filter((line) => /^[1-9]\d*$/.test(line))
    .map(Number);
  return [...new Set(groups)];
}

/**
 * Sends SIGKILL to each recorded process group that still belongs to the
 * build whose HOME is `home`, then deletes the record. Returns the ids of
 * the groups it killed.
 *
 * A recorded id may have been reused for an unrelated process group once the
 * build's group ended, so a group is killed only when one of its running
 * processes has `HOME=<home>` in its environment or a working folder inside
 * `home`. Reading either needs the same user as the process, or root.
 * Processes that left their group are not found through the record.
 */
export async function killRecordedProcessGroups(stateDir: string, home: string): Promise<number[]> {
  // The runner resolves KILN_BUILD_HOME the same way before it sets HOME.
  const buildHome = path.resolve(home);
  const recorded = await readProcessGroups(stateDir);
  const killed: number[] = [];
  if (recorded.length > 0) {
    const members = await listProcessGroupMembers();
    for (const group of recorded) {
      const pids = members.get(group) ?? [];
      if (await anyBelongsToBuild(pids, buildHome)) {
        signalGroup(group, 'SIGKILL');
        killed.push(group);
      }
    }
  }
  await rm(path.join(stateDir, PROCESS_GROUPS_FILE), { force: true });
  return killed;
}

/**
 * Returns the pids of running processes by process group id, from /proc.
 * Zombies are left out, because they no longer run and a killed process
 * stays a zombie until its parent, or init, reaps it.
 */
export async function listProcessGroupMembers(): Promise<Map<number, number[]>> {
  const members = new Map<number, number[]>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // The fields after the parenthesized command name are: state, ppid, pgrp, ...
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields.length < 3 || fields[0] === 'Z') {
      continue;
    }
    const group = Number(fields[2]);
    const pids = members.get(group) ?? [];
    pids.push(Number(entry));
    members.set(group, pids);
  }
  return members;
}

/** Maximum number of /proc scans in {@link killProcessesByHome}, so a build that forks without end cannot keep the cleanup going forever. */
const MAX_KILL_ROUNDS = 10;

/**
 * Sends SIGKILL to every process whose environment has `HOME=<home>` for one
 * of `homes`, which catches the build's processes that left their process
 * group. Skips the calling process and processes whose environment cannot be
 * read: other users' without root, zombies and kernel threads. Scans /proc
 * again after each round that killed something, because a process may fork
 * between the scan and its kill. Returns the killed pids by HOME, as given.
 *
 * NOTE: /proc shows the environment that a process started with, so a
 * process that the build started with another HOME (`env HOME=/tmp daemon`)
 * is not found, and neither is one forked after the last scan.
 */
export async function killProcessesByHome(homes: readonly string[]): Promise<Map<string, number[]>> {
  // The runner resolves KILN_BUILD_HOME the same way before it sets HOME.
  const homeByVariable = new Map(homes.map((home) => [`HOME=${path.resolve(home)}`, home]));
  const killed = new Map<string, number[]>();
  const signalled = new Set<number>();
  for (let round = 0; round < MAX_KILL_ROUNDS; round++) {
    let killedThisRound = 0;
    for (const entry of await readdir('/proc')) {
      const pid = Number(entry);
      if (!/^\d+$/.test(entry) || pid === process.pid || signalled.has(pid)) {
        continue;
      }
      const environment = await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '');
      const variable = environment.split('\0').find((candidate) => homeByVariable.has(candidate));
      if (variable === undefined) {
        continue;
      }
      signalProcess(pid, 'SIGKILL');
      signalled.add(pid);
      killedThisRound += 1;
      const home = homeByVariable.get(variable)!;
      killed.set(home, [...(killed.get(home) ?? []), pid]);
    }
    if (killedThisRound === 0) {
      break;
    }
  }
  return killed;
}

async function anyBelongsToBuild(pids: number[], home: string): Promise<boolean> {
  for (const pid of pids) {
    if (await belongsToBuild(pid, home)) {
      return true;
    }
  }
  return false;
}

/** Checks a process's environment for `HOME=<home>` and its working folder for a place inside `home`. */
async function belongsToBuild(pid: number, home: string): Promise<boolean> {
  const environment = await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '');
  if (environment.split('\0').includes(`HOME=${home}`)) {
    return true;
  }
  const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => null);
  return cwd !== null && (cwd === home || cwd.startsWith(`${home}${path.sep}`));
}

function signalGroup(processGroup: number, signal: NodeJS.Signals): void {
  signalProcess(-processGroup, signal);
}

/** Sends a signal to a pid, or to a process group when negative, ignoring one that no longer exists. */
function signalProcess(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') {
      throw error;
    }
  }
}
