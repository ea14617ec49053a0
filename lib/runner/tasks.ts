import { execFileSync, spawn } from 'node:child_process';
import { chmod, chown, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { quoteShellWord } from './buildenv.js';
import type { LogWriter } from './log-writer.js';

/** PATH for builds when the runner's own environment has none. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** How long a process group gets between SIGTERM and SIGKILL, in milliseconds. */
export const KILL_GRACE_MS = 5_000;
/**
 * After a command's main process exits, reading its pipe stops once nothing
 * has arrived for this long, in milliseconds. A background process that
 * inherited the pipe would otherwise keep the log open forever.
 */
const PIPE_IDLE_AFTER_EXIT_MS = 1_000;

/** The user that build commands run as: the runner's own user, or `KILN_BUILD_USER` through runuser. */
export interface BuildUser {
  name: string;
  /** Set when commands run as another user, so files that the runner writes into HOME are given to that user. */
  ids: { uid: number; gid: number } | null;
}

/**
 * Returns the build user. With a name, commands run through
 * `runuser --preserve-environment -u NAME --`, which switches the account but
 * keeps HOME, USER and SHELL from {@link buildEnvironment} instead of the
 * account's passwd entry, so HOME is KILN_BUILD_HOME.
 * NOTE: tests run that path only when they run as root and the `nobody` account exists.
 */
export function resolveBuildUser(name: string | undefined): BuildUser {
  if (!name) {
    return { name: userInfo().username, ids: null };
  }
  const uid = Number(execFileSync('id', ['-u', '--', name], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', '--', name], { encoding: 'utf8' }).trim());
  return { name, ids: { uid, gid } };
}

/** Gives a file or folder that the runner created to the build user, when builds run as another user. */
export async function giveToBuildUser(user: BuildUser, target: string): Promise<void> {
  if (user.ids) {
    await chown(target, user.ids.uid, user.ids.gid);
  }
}

/**
 * Returns the environment of build commands: PATH, HOME, USER, LOGNAME,
 * LANG, TERM and SHELL, and nothing of the runner's own environment.
 */
export function buildEnvironment(home: string, user: BuildUser, runnerPath: string | undefined): Record<string, string> {
  return {
    PATH: runnerPath || DEFAULT_PATH,
    HOME: home,
    USER: user.name,
    LOGNAME: user.name,
    LANG: 'C.UTF-8',
    TERM: 'dumb',
    SHELL: '/bin/bash',
  };
}

/** Folders and files that the runner keeps in the build's HOME, under `~/.kiln`. */
export interface RunnerFiles {
  /** Folder put first on the tasks' PATH; contains `complete-build`. */
  binDir: string;
  /** Folder of the generated task scripts. */
  scriptDir: string;
  /** File that `complete-build` creates; the runner checks for it after each task. */
  completeMarker: string;
}

/** Creates `~/.kiln` with the `complete-build` command and a folder for task scripts. */
export async function prepareRunnerFiles(home: string, user: BuildUser): Promise<RunnerFiles> {
  const kilnDir = path.join(home, '.kiln');
  const files: RunnerFiles = {
    binDir: path.join(kilnDir, 'bin'),
    scriptDir: path.join(kilnDir, 'tasks'),
    completeMarker: path.join(kilnDir, 'complete-build'),
  };
  await mkdir(files.binDir, { recursive: true });
  await mkdir(files.scriptDir, { recursive: true });
  await rm(files.completeMarker, { force: true });

  const command = path.join(files.binDir, 'complete-build');
  await writeFile(
    command,
    [
      '#!/bin/sh',
      '# Ends the build as successful: the Kiln runner marks the current task as success',
      '# and skips the remaining tasks. The non-zero exit ends the task under `set -e`.',
      `: > ${quoteShellWord(files.completeMarker)}`,
      "echo 'complete-build: ending the build as successful; the remaining tasks are skipped.' >&2",
      'exit 1',
      '',
    ].join('\n'),
  );
  await chmod(command, 0o755);

  for (const target of [kilnDir, files.binDir, files.scriptDir, command]) {
    await giveToBuildUser(user, target);
  }
  return files;
}

/**
 * Writes the script of one task: the runner's bin folder goes first on PATH
 * (a login shell's /etc/profile resets PATH), then `. ~/.buildenv`, `set -xe`
 * and the task's text. Returns the script's path.
 */
export async function writeTaskScript(files: RunnerFiles, user: BuildUser, index: number, task: { name: string; script: string }): Promise<string> {
  const safeName = task.name.replace(/[^A-Za-z0-9_.-]/g, '_');
  const scriptPath = path.join(files.scriptDir, `${String(index + 1).padStart(2, '0')}-${safeName}.sh`);
  const body = task.script.endsWith('\n') ? task.script : `${task.script}\n`;
  await writeFile(scriptPath, `export PATH=${quoteShellWord(files.binDir)}:"$PATH"\n. ~/.buildenv\nset -xe\n${body}`);
  await giveToBuildUser(user, scriptPath);
  return scriptPath;
}

/** Returns whether `complete-build` ran, by the marker that it leaves. */
export async function completeBuildRequested(files: RunnerFiles): Promise<boolean> {
  try {
    await stat(files.completeMarker);
    return true;
  } catch {
    return false;
  }
}

export interface CommandOptions {
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  user: BuildUser;
  /** Receives stdout and stderr through one pipe, so their order is kept. */
  output: LogWriter;
  /** Aborting kills the command's process group. */
  signal: AbortSignal;
  /** Called synchronously with the process group id right after the spawn, before the command's output is read. */
  onStart?: (processGroup: number) => void;
  /** Bytes for the command's stdin, which is /dev/null when left out. */
  input?: Buffer;
}

export interface CommandResult {
  /** Exit code, or null when a signal ended the process or it never started. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Error message of a failed start, or null. */
  spawnError: string | null;
  /** The process group id (the main process's pid), or null when nothing started. */
  processGroup: number | null;
}

/** Returns `exit code 2`, `killed by SIGTERM` or the start failure, for log lines. */
export function describeResult(result: CommandResult): string {
  if (result.spawnError !== null) {
    return `could not start: ${result.spawnError}`;
  }
  if (result.signal !== null) {
    return `killed by ${result.signal}`;
  }
  return `exit code ${result.exitCode}`;
}

/**
 * Runs a command in a new session and process group, with stdin from
 * `input` or /dev/null and stdout and stderr merged into `output`. `/bin/sh` points fd 2
 * at the pipe of fd 1 and then execs the command, so the command keeps the
 * group leader's pid. Aborting `signal` kills the whole group.
 */
export async function runCommand(options: CommandOptions): Promise<CommandResult> {
  const notStarted = (reason: string): CommandResult => ({ exitCode: null, signal: null, spawnError: reason, processGroup: null });
  if (options.signal.aborted) {
    return notStarted('the job was stopped before the command started');
  }

  const argv = options.user.ids ? ['runuser', '--preserve-environment', '-u', options.user.name, '--', ...options.argv] : options.argv;
  const shellArguments = ['-c', 'exec "$@" 2>&1', 'sh', ...argv];
  const spawnOptions = { cwd: options.cwd, env: options.env, detached: true };
  const child =
    options.input === undefined
      ? spawn('/bin/sh', shellArguments, { ...spawnOptions, stdio: ['ignore', 'pipe', 'ignore'] })
      : spawn('/bin/sh', shellArguments, { ...spawnOptions, stdio: ['pipe', 'pipe', 'ignore'] });
  if (options.input !== undefined && child.stdin !== null) {
    // A command that exits without reading all of its input makes the write fail with EPIPE, which is no error here.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input);
  }

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null } | { error: Error }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => resolve({ error }));
  });

  const pid = child.pid;
  if (pid !== undefined) {
    options.onStart?.(pid);
  }
  let killing: Promise<boolean> | null = null;
  const onAbort = (): void => {
    if (pid !== undefined) {
      killing ??= killProcessGroup(pid);
    }
  };
  options.signal.addEventListener('abort', onAbort, { once: true });

  const pumpState = { lastActivity: Date.now(), writing: false };
  const pumped = pump(child.stdout, options.output, pumpState);

  const outcome = await exited;
  if ('error' in outcome) {
    options.signal.removeEventListener('abort', onAbort);
    child.stdout.destroy();
    await pumped;
    return notStarted(outcome.error.message);
  }

  await stopReadingWhenIdle(child.stdout, pumped, pumpState);
  options.signal.removeEventListener('abort', onAbort);
  if (killing) {
    await killing;
  }
  return { exitCode: outcome.code, signal: outcome.signal, spawnError: null, processGroup: pid ?? null };
}

interface PumpState {
  /** When a chunk last arrived or a wait for the file's buffer ended, in epoch milliseconds. */
  lastActivity: number;
  /** True while the pump waits for the log file's buffer, so a pause is not taken as an idle pipe. */
  writing: boolean;
}

/** Copies a pipe into a log writer, waiting when the file's buffer is full so the pipe applies backpressure. */
async function pump(stream: Readable, output: LogWriter, state: PumpState): Promise<void> {
  try {
    for await (const chunk of stream) {
      state.lastActivity = Date.now();
      if (!output.write(chunk as Buffer)) {
        state.writing = true;
        await output.drained();
        state.writing = false;
        state.lastActivity = Date.now();
      }
    }
  } catch {
    // stopReadingWhenIdle destroyed the stream, which ends the iteration with an error.
  }
}

/**
 * Waits for the pipe to close after the main process exited. When a
 * background process still keeps the pipe open, reading stops once it has
 * been idle for {@link PIPE_IDLE_AFTER_EXIT_MS}.
 *
 * NOTE: that background process then gets EPIPE or SIGPIPE on its next write.
 */
async function stopReadingWhenIdle(stream: Readable, pumped: Promise<void>, state: PumpState): Promise<void> {
  let done = false;
  void pumped.then(() => {
    done = true;
  });
  while (!done) {
    await Promise.race([pumped, sleep(100)]);
    if (done) {
      return;
    }
    const idle = Date.now() - state.lastActivity;
    if (!state.writing && stream.readableLength === 0 && idle >= PIPE_IDLE_AFTER_EXIT_MS) {
      stream.destroy();
      await pumped;
      return;
    }
  }
}

/**
 * Sends SIGTERM to a process group, and SIGKILL to whatever is left of it
 * after {@link KILL_GRACE_MS}. Returns false when no process of the group
 * was running. Processes that started their own session or group (setsid,
 * daemons) are out of reach.
 */
export async function killProcessGroup(processGroup: number, graceMs = KILL_GRACE_MS): Promise<boolean> {
  if (!(await groupIsRunning(processGroup))) {
    return false;
  }
  signalGroup(processGroup, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    await sleep(100);
    if (!(await groupIsRunning(processGroup))) {
      return true;
    }
  }
  signalGroup(processGroup, 'SIGKILL');
  return true;
}

/** Sends a signal to every process of a group, ignoring a group that no longer exists. */
function signalGroup(processGroup: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-processGroup, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') {
      throw error;
    }
  }
}

/**
 * Returns whether a process of the group is still running. Zombies do not
 * count: a killed grandchild stays a zombie until init reaps it, and
 * `kill(-group, 0)` still finds it until then. Without /proc the check falls
 * back to `kill(-group, 0)`.
 */
async function groupIsRunning(processGroup: number): Promise<boolean> {
  try {
    process.kill(-processGroup, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }

  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return true;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // The fields after the parenthesized command name are: state, ppid, pgrp, ...
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === processGroup && fields[0] !== 'Z') {
      return true;
    }
  }
  return false;
}
