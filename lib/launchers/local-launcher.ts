import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../logger.js';
import { killProcessesByHome, killRecordedProcessGroups } from '../runner/process-groups.js';
import type { LaunchRequest, Launcher } from './launcher.js';

/** The runner's entry point, run with `node --import tsx`. */
export const RUNNER_MAIN = fileURLToPath(new URL('../runner/main.ts', import.meta.url));

/** Time a runner gets after SIGTERM to stop its task and upload its logs before SIGKILL. */
const STOP_GRACE_MS = 10_000;

export interface LocalLauncherOptions {
  /** Base URL of the API that runners claim their jobs from. */
  apiUrl: string;
  /** Root of the build folders: `<dataDir>/builds/<id>` is a build's HOME. */
  dataDir: string;
  logger: Logger;
  /** Called when a runner process exits, whatever the reason. */
  onExit?: (jobId: number, code: number | null, signal: NodeJS.Signals | null) => void;
}

/**
 * Starts each runner as a child process on this host, in a process group of
 * its own. The runner starts each build command in another group and records
 * it in its state folder, and the launcher kills those groups once the runner
 * has exited, whatever the reason. Then it kills every process that still has
 * the build's HOME, which catches processes that left their group. The runner
 * gets only the API URL, the job id, its one-time job token and its folders.
 */
export class LocalLauncher implements Launcher {
  private readonly children = new Map<number, ChildProcess>();
  private readonly exits = new Map<number, Promise<void>>();

  constructor(private readonly options: LocalLauncherOptions) {}

  buildHome(jobId: number): string {
    return path.join(this.options.dataDir, 'builds', String(jobId));
  }

  stateDir(jobId: number): string {
    return path.join(this.options.dataDir, 'runners', String(jobId));
  }

  async launch(request: LaunchRequest): Promise<string> {
    const home = this.buildHome(request.jobId);
    const stateDir = this.stateDir(request.jobId);
    await mkdir(home, { recursive: true });
    await mkdir(stateDir, { recursive: true });

    const output = createWriteStream(path.join(stateDir, 'runner.log'), { flags: 'a' });
    const child = spawn(process.execPath, ['--import', 'tsx', RUNNER_MAIN], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
        LANG: 'C.UTF-8',
        KILN_API_URL: this.options.apiUrl,
        KILN_JOB_ID: String(request.jobId),
        KILN_JOB_TOKEN: request.jobToken,
        KILN_BUILD_HOME: home,
        KILN_RUNNER_STATE_DIR: stateDir,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      },
    });
    child.stdout?.pipe(output, { end: false });
    child.stderr?.pipe(output, { end: false });

    const exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        this.children.delete(request.jobId);
        void rm(path.join(stateDir, 'runner.pid'), { force: true });
        output.end();
        this.options.logger.info({ jobId: request.jobId, code, signal }, 'runner exited');
        // The build's processes go before the job is reported, so a failed job leaves nothing running.
        void this.killBuildProcesses(request.jobId).finally(() => {
          this.options.onExit?.(request.jobId, code, signal);
          resolve();
        });
      });
    });
    const spawned = await new Promise<boolean>((resolve) => {
      child.once('spawn', () => resolve(true));
      child.once('error', (error) => {
        this.options.logger.error({ err: error, jobId: request.jobId }, 'failed to start runner');
        resolve(false);
      });
    });
    if (!spawned || child.pid === undefined) throw new Error(`failed to start the runner process for job ${request.jobId}`);

    this.children.set(request.jobId, child);
    this.exits.set(request.jobId, exited);
    await writeFile(path.join(stateDir, 'runner.pid'), String(child.pid));

    return 'local';
  }

  async stop(jobId: number, _runner: string, reason: string): Promise<void> {
    const child = this.children.get(jobId);
    if (!child?.pid) return;

    this.options.logger.info({ jobId, reason }, 'stopping runner');
    signalGroup(child.pid, 'SIGTERM');
    const exited = this.exits.get(jobId) ?? Promise.resolve();
    const timer = sleep(STOP_GRACE_MS).then(() => 'timeout' as const);
    if ((await Promise.race([exited.then(() => 'exited' as const), timer])) === 'timeout') {
      signalGroup(child.pid, 'SIGKILL');
      await exited;
    }
    // The exit handler has killed the build's processes already, so this finds them only when that failed.
    await this.killBuildProcesses(jobId);
  }

  /** Stops every runner, for a clean shutdown of the local stack. */
  async stopAll(reason: string): Promise<void> {
    await Promise.all([...this.children.keys()].map((jobId) => this.stop(jobId, 'local', reason)));
  }

  /**
   * Kills the process groups of runners that a previous run of the local
   * stack left behind, found through their pid files. Then it kills the build
   * processes that those runners, or runners that died with the stack,
   * recorded, and every process with the HOME of one of those builds.
   * Returns the ids of the jobs whose runner it killed.
   */
  async killLeftovers(): Promise<number[]> {
    const root = path.join(this.options.dataDir, 'runners');
    const jobIds: number[] = [];
    const leftoverJobIds: number[] = [];
    for (const entry of await readdir(root).catch(() => [] as string[])) {
      const pidFile = path.join(root, entry, 'runner.pid');
      const pid = Number(await readFile(pidFile, 'utf8').catch(() => ''));
      if (Number.isInteger(pid) && pid > 0 && (await isRunnerProcess(pid))) {
        signalGroup(pid, 'SIGKILL');
        jobIds.push(Number(entry));
      }
      await rm(pidFile, { force: true });
      const jobId = Number(entry);
      if (Number.isInteger(jobId) && !this.children.has(jobId)) {
        await this.killRecordedGroups(jobId);
        leftoverJobIds.push(jobId);
      }
    }
    // One scan of /proc for every job, because the runners folder keeps a folder for each job that ever ran.
    await this.killProcessesWithBuildHome(leftoverJobIds);

    return jobIds;
  }

  /** Kills a job's recorded process groups, then the processes that left them but still have the build's HOME. */
  private async killBuildProcesses(jobId: number): Promise<void> {
    await this.killRecordedGroups(jobId);
    await this.killProcessesWithBuildHome([jobId]);
  }

  /** Kills the process groups that a job's runner recorded and that still belong to the build. */
  private async killRecordedGroups(jobId: number): Promise<void> {
    try {
      const killed = await killRecordedProcessGroups(this.stateDir(jobId), this.buildHome(jobId));
      if (killed.length > 0) {
        this.options.logger.info({ jobId, processGroups: killed }, 'killed build processes that the runner left');
      }
    } catch (error) {
      this.options.logger.error({ err: error, jobId }, 'failed to kill the build processes that the runner left');
    }
  }

  /**
   * Kills every process whose environment has the HOME of one of the jobs'
   * builds, such as a `setsid` child or a daemon like gpg-agent, which left
   * the recorded process groups.
   */
  private async killProcessesWithBuildHome(jobIds: readonly number[]): Promise<void> {
    if (jobIds.length === 0) {
      return;
    }
    try {
      const killed = await killProcessesByHome(jobIds.map((jobId) => this.buildHome(jobId)));
      for (const jobId of jobIds) {
        const pids = killed.get(this.buildHome(jobId)) ?? [];
        if (pids.length > 0) {
          this.options.logger.info({ jobId, pids }, 'killed build processes that left their process group');
        }
      }
    } catch (error) {
      this.options.logger.error({ err: error, jobIds }, 'failed to kill the build processes that left their process group');
    }
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/** Checks that a pid still belongs to a Kiln runner, so a reused pid is never killed. */
async function isRunnerProcess(pid: number): Promise<boolean> {
  const commandLine = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');

  return commandLine.includes(RUNNER_MAIN);
}
