import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalLauncher } from '../lib/launchers/local-launcher.js';
import { PROCESS_GROUPS_FILE, listProcessGroupMembers, readProcessGroups } from '../lib/runner/process-groups.js';
import type { ClaimedTask } from '../lib/runner/protocol.js';
import { runRunner, startFakeRunnerApi, startRunner, type FakeRunnerApi } from './support/fake-runner-api.js';
import { quietLogger } from './support/local-stack.js';

const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  while (cleanups.length > 0) {
    await cleanups.pop()!();
  }
});

/** The task of the leftover tests: a background and a foreground sleep that outlive any test. */
const SLEEPING_TASK: ClaimedTask = {
  name: 'sleepy',
  script: 'echo $$ > ~/task.pid\nsleep 600 &\necho $! > ~/background.pid\nsleep 600',
};

/**
 * The task of the escape tests: a `setsid sleep` that leaves the task's
 * process group and session. The task writes the sleep's pid only once its
 * session id, the sixth field of /proc/PID/stat, is its own pid.
 */
const ESCAPE_LINES = [
  'setsid sleep 600 &',
  'escaped=$!',
  'while [ "$(cut -d" " -f6 /proc/$escaped/stat)" != "$escaped" ]; do sleep 0.1; done',
  'echo $escaped > ~/escaped.pid',
];

async function startApi(tasks: ClaimedTask[]): Promise<FakeRunnerApi> {
  const api = await startFakeRunnerApi({ job: { tasks } });
  cleanups.push(() => api.close());
  return api;
}

async function temporaryFolder(): Promise<string> {
  const folder = await mkdtemp(path.join(os.tmpdir(), 'kiln-process-groups-'));
  cleanups.push(() => rm(folder, { recursive: true, force: true }));
  return folder;
}

/** Reads a pid that a task writes, waiting for the file and its content. */
async function waitForPid(file: string): Promise<number> {
  for (;;) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (text.endsWith('\n')) {
      return Number(text.trim());
    }
    await sleep(50);
  }
}

/** Returns whether a process is gone. A zombie counts as gone, because init in some containers never reaps it. */
async function isGone(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat === '' || stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
}

/** Polls until every pid is gone. A process that stays makes the test time out. */
async function waitUntilGone(pids: number[]): Promise<void> {
  for (const pid of pids) {
    while (!(await isGone(pid))) {
      await sleep(50);
    }
  }
}

/** Waits until the task's group runs both sleeps and returns the pids of its members, shell included. */
async function waitForSleepingTask(home: string): Promise<number[]> {
  const group = await waitForPid(path.join(home, 'task.pid'));
  await waitForPid(path.join(home, 'background.pid'));
  for (;;) {
    const members = (await listProcessGroupMembers()).get(group) ?? [];
    const commandLines = await Promise.all(members.map((pid) => readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')));
    if (commandLines.filter((line) => line === 'sleep\x00600\x00').length === 2) {
      cleanups.push(async () => killGroup(group));
      return members;
    }
    await sleep(50);
  }
}

/** Waits for the pid of the task's escaped sleep and kills it at cleanup, unless the pid runs something else by then. */
async function waitForEscapedSleep(home: string): Promise<number> {
  const pid = await waitForPid(path.join(home, 'escaped.pid'));
  cleanups.push(async () => {
    if ((await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')) === 'sleep\x00600\x00') {
      process.kill(pid, 'SIGKILL');
    }
  });
  return pid;
}

function killGroup(group: number): void {
  try {
    process.kill(-group, 'SIGKILL');
  } catch {
    // The group is gone, as the test expects.
  }
}

describe('process group cleanup', () => {
  it('records the group of every task', async () => {
    const api = await startApi([
      { name: 'first', script: 'echo $$ > ~/first.pid' },
      { name: 'second', script: 'echo $$ > ~/second.pid' },
    ]);
    const root = await temporaryFolder();
    const folders = { home: path.join(root, 'home'), stateDir: path.join(root, 'state'), remove: async () => undefined };

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    const recorded = await readProcessGroups(folders.stateDir);
    expect(recorded).toContain(Number(await readFile(path.join(folders.home, 'first.pid'), 'utf8')));
    expect(recorded).toContain(Number(await readFile(path.join(folders.home, 'second.pid'), 'utf8')));
  });

  it('kills the build after the runner is SIGKILLed', { timeout: 30_000 }, async () => {
    const api = await startApi([SLEEPING_TASK]);
    const dataDir = await temporaryFolder();
    let reportExit!: (signal: NodeJS.Signals | null) => void;
    const exited = new Promise<NodeJS.Signals | null>((resolve) => (reportExit = resolve));
    const launcher = new LocalLauncher({ apiUrl: api.url, dataDir, logger: quietLogger, onExit: (_jobId, _code, signal) => reportExit(signal) });
    await launcher.launch({ jobId: api.jobId, jobToken: api.jobToken, attempt: 1, image: 'debian/stable', arch: 'x86_64' });
    cleanups.push(() => launcher.stopAll('the test ended'));
    const members = await waitForSleepingTask(launcher.buildHome(api.jobId));
    const runnerPid = Number(await readFile(path.join(launcher.stateDir(api.jobId), 'runner.pid'), 'utf8'));

    process.kill(runnerPid, 'SIGKILL');

    expect(await exited).toBe('SIGKILL');
    await waitUntilGone(members);
    expect(members.length).toBeGreaterThanOrEqual(3);
    expect(existsSync(path.join(launcher.stateDir(api.jobId), PROCESS_GROUPS_FILE))).toBe(false);
  });

  it('kills the build when the launcher stops the runner', { timeout: 30_000 }, async () => {
    const api = await startApi([SLEEPING_TASK]);
    const dataDir = await temporaryFolder();
    const launcher = new LocalLauncher({ apiUrl: api.url, dataDir, logger: quietLogger });
    await launcher.launch({ jobId: api.jobId, jobToken: api.jobToken, attempt: 1, image: 'debian/stable', arch: 'x86_64' });
    cleanups.push(() => launcher.stopAll('the test ended'));
    const members = await waitForSleepingTask(launcher.buildHome(api.jobId));

    await launcher.stop(api.jobId, 'local', 'the test stops the job');

    await waitUntilGone(members);
    expect(api.completion).toEqual({ status: 'failed', reason: 'the runner received SIGTERM' });
  });

  it('kills leftovers of a crashed stack', { timeout: 30_000 }, async () => {
    const api = await startApi([SLEEPING_TASK]);
    const dataDir = await temporaryFolder();
    const launcher = new LocalLauncher({ apiUrl: api.url, dataDir, logger: quietLogger });
    const home = launcher.buildHome(api.jobId);
    const stateDir = launcher.stateDir(api.jobId);
    await mkdir(stateDir, { recursive: true });
    // A runner that no launcher of this process watches, as after a crash of the local stack.
    const runner = startRunner(api, { home, stateDir, remove: async () => undefined }, {}, { detached: true });
    cleanups.push(async () => killGroup(runner.pid));
    await writeFile(path.join(stateDir, 'runner.pid'), String(runner.pid));
    const members = await waitForSleepingTask(home);

    const killedRunners = await launcher.killLeftovers();

    expect(killedRunners).toEqual([api.jobId]);
    expect((await runner.exited).signal).toBe('SIGKILL');
    await waitUntilGone(members);
    expect(existsSync(path.join(stateDir, PROCESS_GROUPS_FILE))).toBe(false);
  });

  it('kills a setsid process after the job ends', { timeout: 30_000 }, async () => {
    const api = await startApi([{ name: 'escape', script: ESCAPE_LINES.join('\n') }]);
    const dataDir = await temporaryFolder();
    let reportExit!: (code: number | null) => void;
    const exited = new Promise<number | null>((resolve) => (reportExit = resolve));
    const launcher = new LocalLauncher({ apiUrl: api.url, dataDir, logger: quietLogger, onExit: (_jobId, code) => reportExit(code) });
    await launcher.launch({ jobId: api.jobId, jobToken: api.jobToken, attempt: 1, image: 'debian/stable', arch: 'x86_64' });
    cleanups.push(() => launcher.stopAll('the test ended'));
    const escaped = await waitForEscapedSleep(launcher.buildHome(api.jobId));

    expect(await exited).toBe(0);
    await waitUntilGone([escaped]);
    expect(api.completion).toEqual({ status: 'success' });
  });

  it('kills a setsid process when the launcher stops the runner', { timeout: 30_000 }, async () => {
    const api = await startApi([{ name: 'escape', script: [...ESCAPE_LINES, 'sleep 600'].join('\n') }]);
    const dataDir = await temporaryFolder();
    const launcher = new LocalLauncher({ apiUrl: api.url, dataDir, logger: quietLogger });
    await launcher.launch({ jobId: api.jobId, jobToken: api.jobToken, attempt: 1, image: 'debian/stable', arch: 'x86_64' });
    cleanups.push(() => launcher.stopAll('the test ended'));
    const escaped = await waitForEscapedSleep(launcher.buildHome(api.jobId));

    await launcher.stop(api.jobId, 'local', 'the test stops the job');

    await waitUntilGone([escaped]);
    expect(api.completion).toEqual({ status: 'failed', reason: 'the runner received SIGTERM' });
  });

  it('kills a setsid process of a crashed stack', { timeout: 30_000 }, async () => {
    const api = await startApi([{ name: 'escape', script: [...ESCAPE_LINES, 'sleep 600'].join('\n') }]);
    const dataDir = await temporaryFolder();
    const launcher = new LocalLauncher({ apiUrl: api.url, dataDir, logger: quietLogger });
    const home = launcher.buildHome(api.jobId);
    const stateDir = launcher.stateDir(api.jobId);
    await mkdir(stateDir, { recursive: true });
    const runner = startRunner(api, { home, stateDir, remove: async () => undefined }, {}, { detached: true });
    cleanups.push(async () => killGroup(runner.pid));
    await writeFile(path.join(stateDir, 'runner.pid'), String(runner.pid));
    const escaped = await waitForEscapedSleep(home);

    expect(await launcher.killLeftovers()).toEqual([api.jobId]);

    await waitUntilGone([escaped]);
  });

  it('matches the build HOME exactly', { timeout: 30_000 }, async () => {
    const dataDir = await temporaryFolder();
    const launcher = new LocalLauncher({ apiUrl: 'http://127.0.0.1:9', dataDir, logger: quietLogger });
    const home = launcher.buildHome(7);
    await mkdir(launcher.stateDir(7), { recursive: true });
    const startSleep = (processHome: string): number => {
      const child = spawn('sleep', ['600'], { detached: true, stdio: 'ignore', cwd: os.tmpdir(), env: { PATH: process.env.PATH, HOME: processHome } });
      const pid = child.pid!;
      cleanups.push(async () => killGroup(pid));
      return pid;
    };
    const build = startSleep(home);
    const sibling = startSleep(`${home}0`);
    const inside = startSleep(path.join(home, 'sub'));

    await launcher.killLeftovers();

    await waitUntilGone([build]);
    expect(await isGone(sibling)).toBe(false);
    expect(await isGone(inside)).toBe(false);
  });

  it('spares a reused process group id', async () => {
    const dataDir = await temporaryFolder();
    const launcher = new LocalLauncher({ apiUrl: 'http://127.0.0.1:9', dataDir, logger: quietLogger });
    const stateDir = launcher.stateDir(7);
    await mkdir(stateDir, { recursive: true });
    // A process group that reuses a recorded id but belongs to another HOME and folder.
    const stranger = spawn('sleep', ['600'], { detached: true, stdio: 'ignore', cwd: os.tmpdir(), env: { PATH: process.env.PATH, HOME: os.tmpdir() } });
    const strangerPid = stranger.pid!;
    cleanups.push(async () => killGroup(strangerPid));
    await writeFile(path.join(stateDir, PROCESS_GROUPS_FILE), `${strangerPid}\n`);

    await launcher.killLeftovers();

    expect(await isGone(strangerPid)).toBe(false);
    expect(existsSync(path.join(stateDir, PROCESS_GROUPS_FILE))).toBe(false);
  });
});
