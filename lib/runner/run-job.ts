import { mkdir, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { findArtifacts, formatSize, putArtifact } from './artifacts.js';
import { renderBuildenv } from './buildenv.js';
import { JobEndedError, RunnerApiError, RunnerClient } from './client.js';
import { LogWriter } from './log-writer.js';
import { installPackages } from './package-setup.js';
import { recordProcessGroup } from './process-groups.js';
import { SecretMasker, SecretMatcher, secretPatterns } from './secret-masker.js';
import { decodeSecrets, findExecutable, installSecrets } from './secrets.js';
import type { ClaimedJob, LogUrlRequest, RunnerJobStatus, RunnerTaskStatus, SecretsResponse } from './protocol.js';
import { ValidationError } from '../errors.js';
// The parser's own module, because the package index also loads the YAML parser and the image catalog.
import { parseSource, type ParsedSource } from '../manifest/sources.js';
import { checkParsedSource, cloneCommands, hideUrlPassword } from './sources.js';
import {
  buildEnvironment,
  completeBuildRequested,
  describeResult,
  giveToBuildUser,
  killProcessGroup,
  prepareRunnerFiles,
  resolveBuildUser,
  runCommand,
  writeTaskScript,
  type BuildUser,
  type CommandOptions,
  type CommandResult,
  type RunnerFiles,
} from './tasks.js';

/** Node.js names of this machine's architecture, mapped to the manifest's names. */
const HOST_ARCHITECTURES: Record<string, string> = { x64: 'x86_64', arm64: 'arm64' };

/** Runner settings, read from its environment. */
export interface RunnerConfig {
  /** KILN_API_URL: the service's base URL. */
  apiUrl: string;
  /** KILN_JOB_ID */
  jobId: string;
  /** KILN_JOB_TOKEN: the one-time token for the claim. */
  jobToken: string;
  /** KILN_BUILD_HOME: the build's HOME, created when missing. */
  buildHome: string;
  /** KILN_RUNNER_STATE_DIR: where logs are buffered, outside HOME. */
  stateDir: string;
  /**
   * KILN_BUILD_USER: run build commands as this user through runuser. Only the
   * container sets it, and with it the runner also installs the manifest's
   * packages and repositories as root.
   */
  buildUser?: string;
  /** KILN_RUNNER_NAME: the runner's name as its launcher recorded it, sent with the claim. */
  runnerName?: string;
}

/** Exit codes of the runner process. */
export const EXIT_SUCCESS = 0;
export const EXIT_FAILED = 1;
export const EXIT_CLAIM_FAILED = 2;

/** Cause of stopping the job's work before it ran to its end. */
type StopReason =
  | { kind: 'timeout' }
  | { kind: 'signal'; signal: string }
  | { kind: 'ended'; message: string }
  | { kind: 'unreachable'; message: string };

/**
 * Claims the job and runs it to the end. `stop` aborts the work from outside
 * (main aborts it on SIGTERM or SIGINT, with the signal's name as reason).
 * Returns the process exit code: 0 when the job succeeded, 1 otherwise, 2
 * when the claim failed.
 */
export async function runJob(config: RunnerConfig, logger: Logger, stop: AbortSignal): Promise<number> {
  const client = new RunnerClient({ baseUrl: config.apiUrl, logger });
  let job: ClaimedJob;
  try {
    job = (await client.claim(config.jobToken, config.runnerName)).job;
  } catch (error) {
    logger.error({ err: errorMessage(error) }, 'claim failed');
    return EXIT_CLAIM_FAILED;
  }
  if (String(job.id) !== config.jobId) {
    logger.error({ claimedJobId: job.id }, 'claim returned a different job than KILN_JOB_ID');
    return EXIT_CLAIM_FAILED;
  }
  logger.info({ tasks: job.tasks.length, deadline: job.deadline }, 'claimed job');
  removeRunnerVariables(process.env);

  const run = new JobRun(config, job, client, logger);
  return run.execute(stop);
}

/** Removes the runner's own KILN_* and AWS_* variables, so no child process inherits them. */
export function removeRunnerVariables(environment: NodeJS.ProcessEnv): void {
  for (const name of Object.keys(environment)) {
    if (name.startsWith('KILN_') || name.startsWith('AWS_')) {
      delete environment[name];
    }
  }
}

/** One claimed job: the setup log, sources, tasks and the final report. */
class JobRun {
  private readonly controller = new AbortController();
  private readonly home: string;
  private user!: BuildUser;
  private readonly taskStatus = new Map<string, RunnerTaskStatus | 'pending'>();
  private readonly processGroups: Array<{ task: string; group: number }> = [];
  private stopReason: StopReason | null = null;
  private failure: string | null = null;
  private completedBy: string | null = null;
  private setup: LogWriter | null = null;
  /** Matcher of the job's secret values, or null before they are fetched and when there are none. */
  private secretMatcher: SecretMatcher | null = null;
  /** Whether gpg ran for a PGP key, so gpg-agent must be stopped at the end. */
  private gpgRan = false;
  /** Whether {@link skipPendingTasks} has run, which it does once, before the artifacts or at the end. */
  private pendingTasksSettled = false;

  constructor(
    private readonly config: RunnerConfig,
    private readonly job: ClaimedJob,
    private readonly client: RunnerClient,
    private readonly logger: Logger,
  ) {
    this.home = path.resolve(config.buildHome);
    for (const task of job.tasks) {
      this.taskStatus.set(task.name, 'pending');
    }
  }

  async execute(externalStop: AbortSignal): Promise<number> {
    try {
      await mkdir(path.join(this.config.stateDir, 'logs'), { recursive: true });
      this.setup = await this.openLog({ log: 'setup' }, 'setup.log', 'setup');
    } catch (error) {
      // Without a setup log the job cannot run, but the service still learns why through complete.
      this.logger.error({ err: errorMessage(error) }, 'failed to create the setup log');
      this.fail(`the runner failed to create the setup log: ${errorMessage(error)}`);
      await this.skipPendingTasks();
      return this.finish();
    }

    const onExternalStop = (): void => this.stop({ kind: 'signal', signal: String(externalStop.reason ?? 'a signal') });
    let deadlineTimer: { current: NodeJS.Timeout | undefined } = { current: undefined };
    try {
      this.user = resolveBuildUser(this.config.buildUser);
      this.describeJob();
      externalStop.addEventListener('abort', onExternalStop, { once: true });
      deadlineTimer = this.startDeadlineTimer();
      if (externalStop.aborted) {
        onExternalStop();
      }

      const files = await this.prepareHome();
      if ((await this.setUpSecrets()) && (await this.setUpPackages()) && (await this.cloneSources())) {
        await this.runTasks(files);
      }
      if (this.failure === null && this.stopReason === null) {
        // complete-build leaves later tasks pending, and background processes could still change files.
        await this.skipPendingTasks();
        await this.stopBackgroundProcesses();
        await this.uploadArtifacts();
      }
    } catch (error) {
      // Protocol errors are handled where they happen, so this catches failures of the runner itself.
      this.logger.error({ err: errorMessage(error) }, 'runner error');
      this.line(`Runner error: ${errorMessage(error)}`);
      this.fail(`runner error: ${errorMessage(error)}`);
    } finally {
      clearTimeout(deadlineTimer.current);
      externalStop.removeEventListener('abort', onExternalStop);
    }

    await this.skipPendingTasks();
    await this.stopBackgroundProcesses();
    return this.finish();
  }

  private describeJob(): void {
    const job = this.job;
    this.line(`Claimed job ${job.id}: image ${job.image}, arch ${job.arch}, ${job.tasks.length} task(s), deadline ${job.deadline}.`);
    if (this.inOwnContainer()) {
      this.line(`Build commands run as user ${this.user.name}, and packages and repositories are installed as root.`);
    } else {
      this.line(
        `NOTE: The local runner does not install packages or repositories and does not isolate the image, ` +
          `so build commands run directly on this machine as user ${this.user.name}.`,
      );
      if (job.packages.length > 0) {
        this.line(`NOTE: Packages not installed: ${job.packages.join(' ')}`);
      }
      const repositories = Object.keys(job.repositories);
      if (repositories.length > 0) {
        this.line(`NOTE: Repositories not added: ${repositories.join(' ')}`);
      }
      const hostArch = HOST_ARCHITECTURES[process.arch] ?? process.arch;
      if (hostArch !== job.arch) {
        this.line(`NOTE: The manifest asks for ${job.arch}, but the local runner runs builds on this machine's ${hostArch}.`);
      }
    }
    if (job.shell) {
      this.line('NOTE: "shell: true" has no effect, because Kiln offers no SSH access to builds. The job ends after its last task.');
    }
    if (job.tasks.length === 0) {
      this.line('The manifest has no tasks, so the job ends after the setup.');
    }
  }

  /** Creates HOME, writes `~/.buildenv` and the runner's files under `~/.kiln`. */
  private async prepareHome(): Promise<RunnerFiles> {
    await mkdir(this.home, { recursive: true });
    await giveToBuildUser(this.user, this.home);

    const buildenv = renderBuildenv(this.job);
    const buildenvPath = path.join(this.home, '.buildenv');
    const names = Object.keys(this.job.environment);
    this.line(
      `Writing ${buildenvPath}: CI, CI_NAME, JOB_ID, JOB_URL` + (names.length > 0 ? ` and ${names.join(', ')}.` : '.'),
    );
    if (buildenv.droppedNulIn.length > 0) {
      this.line(`NOTE: NUL bytes were dropped from ${buildenv.droppedNulIn.join(', ')}, because bash strings cannot contain them.`);
    }
    await writeFile(buildenvPath, buildenv.text);
    await giveToBuildUser(this.user, buildenvPath);
    return prepareRunnerFiles(this.home, this.user);
  }

  /**
   * Fetches the job's secrets once, masks their values in every log from
   * then on, and installs them. Returns false when the job cannot go on,
   * with the reason in the setup log.
   */
  private async setUpSecrets(): Promise<boolean> {
    let response: SecretsResponse;
    try {
      response = await this.client.secrets();
    } catch (error) {
      if (error instanceof JobEndedError) {
        this.stop({ kind: 'ended', message: error.message });
        return false;
      }
      if (error instanceof RunnerApiError) {
        this.line(`Fetching the secrets failed: ${error.message}.`);
        this.fail(`fetching the secrets failed: ${error.message}`);
        return false;
      }
      throw error;
    }

    const secrets = decodeSecrets(response);
    if (typeof secrets === 'string') {
      this.line(`The service sent invalid secrets: ${secrets}.`);
      this.fail(`the service sent invalid secrets: ${secrets}`);
      return false;
    }
    if (secrets.length === 0) {
      this.line('No secrets to install.');
      return true;
    }

    this.secretMatcher = new SecretMatcher(secretPatterns(secrets.map(({ value }) => value)));
    this.requireSetupLog().maskSecrets(this.secretMatcher);
    this.line(`Installing ${secrets.length} secret(s).`);
    const installed = await installSecrets(secrets, {
      home: this.home,
      user: this.user,
      allowOutsideHome: this.inOwnContainer(),
      commandPath: buildEnvironment(this.home, this.user, process.env.PATH).PATH,
      log: (text) => this.line(text),
      importPgpKey: (key) =>
        this.runBuildCommand({
          argv: ['gpg', '--batch', '--import'],
          cwd: this.home,
          env: buildEnvironment(this.home, this.user, process.env.PATH),
          user: this.user,
          output: this.requireSetupLog(),
          signal: this.controller.signal,
          input: key,
        }),
    });
    this.gpgRan = installed.gpgRan;
    if (installed.failure !== null) {
      this.fail(installed.failure);
      return false;
    }
    return true;
  }

  /**
   * Returns whether the runner may use paths outside HOME. Only the
   * container image sets KILN_BUILD_USER, and there HOME and the rest of the
   * file system belong to the job alone. The local launcher never sets it.
   */
  private inOwnContainer(): boolean {
    return this.user.ids !== null;
  }

  /**
   * Adds the manifest's repositories and installs its packages as root, in
   * the container only, because the local runner shares this machine's
   * system. Returns false when the job cannot go on, with the reason in the
   * setup log.
   */
  private async setUpPackages(): Promise<boolean> {
    if (!this.inOwnContainer()) {
      return true;
    }
    const runner = userInfo();
    const runnerUser: BuildUser = { name: runner.username, ids: null };
    // Root's own HOME, so that a key import by gpg leaves no root-owned ~/.gnupg in the build's HOME.
    const rootEnvironment = buildEnvironment(runner.homedir, runnerUser, process.env.PATH);
    const buildUserEnvironment = buildEnvironment(this.home, this.user, process.env.PATH);

    const result = await installPackages({
      image: this.job.image,
      request: { packages: this.job.packages, repositories: this.job.repositories },
      runnerIsRoot: runner.uid === 0,
      buildUser: this.user.name,
      log: (text) => this.line(text),
      signal: this.controller.signal,
      run: (command) => {
        const asRoot = command.user === 'root';
        return this.runBuildCommand({
          argv: command.argv,
          cwd: asRoot ? '/' : this.home,
          env: asRoot ? rootEnvironment : buildUserEnvironment,
          user: asRoot ? runnerUser : this.user,
          output: this.requireSetupLog(),
          signal: this.controller.signal,
          input: command.input === undefined ? undefined : Buffer.from(command.input, 'utf8'),
        });
      },
    });
    if (result.status === 'failed') {
      this.fail(result.reason);
    }
    return result.status === 'done';
  }

  /** Clones the sources in order. Returns false when one fails, with the reason in the setup log. */
  private async cloneSources(): Promise<boolean> {
    const environment = {
      ...buildEnvironment(this.home, this.user, process.env.PATH),
      // Without a terminal a credential prompt would wait forever, so private repositories fail at once.
      GIT_TERMINAL_PROMPT: '0',
      GIT_SSH_COMMAND: 'ssh -o BatchMode=yes',
      HGPLAIN: '1',
    };

    for (const source of this.job.sources) {
      if (this.controller.signal.aborted) {
        return false;
      }
      const shown = hideUrlPassword(source);
      const parsed = parseSourceOrReason(source);
      if (typeof parsed === 'string') {
        return this.rejectSource(shown, parsed);
      }
      const problem = checkParsedSource(parsed);
      if (problem !== null) {
        return this.rejectSource(shown, problem);
      }

      for (const argv of cloneCommands(parsed)) {
        const shownCommand = argv.map((word) => hideUrlPassword(word)).join(' ');
        this.line(`Cloning ${shown}: ${shownCommand}`);
        const result = await this.runBuildCommand({
          argv,
          cwd: this.home,
          env: environment,
          user: this.user,
          output: this.requireSetupLog(),
          signal: this.controller.signal,
        });
        if (result.exitCode !== 0) {
          this.line(`Cloning ${shown} failed (${argv[0]}: ${describeResult(result)}).`);
          this.fail(`cloning ${shown} failed (${argv[0]}: ${describeResult(result)})`);
          return false;
        }
      }
    }
    return true;
  }

  /**
   * Uploads the manifest's artifacts once every task succeeded, complete-build
   * included. Every path is checked first, so a missing or oversized file
   * fails the job before anything is uploaded.
   */
  private async uploadArtifacts(): Promise<void> {
    if (this.job.artifacts.length === 0) {
      return;
    }
    const { artifacts, problems } = await findArtifacts(this.job.artifacts, this.home, this.inOwnContainer());
    if (problems.length > 0) {
      for (const problem of problems) {
        this.line(`Artifact ${problem.path} cannot be uploaded: ${problem.reason}.`);
      }
      const paths = problems.map((problem) => problem.path).join(', ');
      this.fail(`${problems.length} of ${this.job.artifacts.length} artifact(s) cannot be uploaded: ${paths}`);
      return;
    }

    for (const artifact of artifacts) {
      if (this.controller.signal.aborted) {
        return;
      }
      this.line(`Uploading artifact ${artifact.path} (${formatSize(artifact.size)}).`);
      try {
        const target = await this.client.artifactUrl({ path: artifact.path, size: artifact.size });
        await putArtifact(target, artifact, this.user, this.controller.signal);
        await this.client.artifactUploaded({ path: artifact.path });
      } catch (error) {
        if (error instanceof JobEndedError) {
          this.stop({ kind: 'ended', message: error.message });
          return;
        }
        this.logger.error({ err: errorMessage(error), artifact: artifact.path }, 'artifact upload failed');
        this.line(`Uploading artifact ${artifact.path} failed: ${errorMessage(error)}.`);
        this.fail(`uploading artifact ${artifact.path} failed: ${errorMessage(error)}`);
        return;
      }
      this.line(`Uploaded artifact ${artifact.path}.`);
    }
  }

  /** Fails the job because a source is invalid. Returns false, for {@link cloneSources}. */
  private rejectSource(shown: string, reason: string): false {
    const sentence = reason.replace(/\.$/, '');
    this.line(`Cannot clone source ${shown}: ${sentence}.`);
    this.fail(`source ${shown} is invalid: ${sentence}`);
    return false;
  }

  private async runTasks(files: RunnerFiles): Promise<void> {
    const environment = buildEnvironment(this.home, this.user, process.env.PATH);

    for (const [index, task] of this.job.tasks.entries()) {
      if (this.controller.signal.aborted) {
        return;
      }
      if (!(await this.report(task.name, 'running'))) {
        return;
      }
      const script = await writeTaskScript(files, this.user, index, task);
      const log = await this.openLog({ log: 'task', task: task.name }, `task-${index + 1}.log`, `task ${task.name}`);
      this.line(`Running task ${task.name}.`);
      this.logger.info({ task: task.name }, 'task started');

      const result = await this.runBuildCommand({
        argv: ['bash', '--login', script],
        cwd: this.home,
        env: environment,
        user: this.user,
        output: log,
        signal: this.controller.signal,
      });
      if (result.processGroup !== null) {
        this.processGroups.push({ task: task.name, group: result.processGroup });
      }

      let status: RunnerTaskStatus;
      if (this.stopReason !== null) {
        status = 'failed';
        log.writeLine(`[kiln] ${this.stopSentence(this.stopReason)} The task was stopped.`);
        this.line(`Task ${task.name} was stopped (${describeResult(result)}).`);
      } else if (await completeBuildRequested(files)) {
        status = 'success';
        this.completedBy = task.name;
        this.line(`Task ${task.name} ran complete-build: the job ends as successful and the remaining tasks are skipped.`);
      } else if (result.exitCode === 0) {
        status = 'success';
        this.line(`Task ${task.name} succeeded (exit code 0).`);
      } else {
        status = 'failed';
        this.line(`Task ${task.name} failed (${describeResult(result)}).`);
        this.fail(`task ${task.name} failed (${describeResult(result)})`);
      }
      this.logger.info({ task: task.name, status, result: describeResult(result) }, 'task ended');

      await log.finish();
      if (!(await this.report(task.name, status)) || status === 'failed' || this.completedBy !== null) {
        return;
      }
    }
  }

  /**
   * Runs a command in a process group of its own and records the group in the
   * state folder, so the launcher can kill it when the runner dies first.
   */
  private runBuildCommand(options: Omit<CommandOptions, 'onStart'>): Promise<CommandResult> {
    return runCommand({ ...options, onStart: (group) => this.recordProcessGroup(group) });
  }

  private recordProcessGroup(group: number): void {
    try {
      recordProcessGroup(this.config.stateDir, group);
    } catch (error) {
      // The command still runs. Only the launcher's cleanup after the runner dies misses its group.
      this.logger.error({ err: errorMessage(error), processGroup: group }, 'failed to record a process group');
    }
  }

  /**
   * Reports `failed` for a task that a runner error left `running` and
   * `skipped` for every task that never ran, as far as the service still
   * accepts updates.
   */
  private async skipPendingTasks(): Promise<void> {
    if (this.pendingTasksSettled) {
      return;
    }
    this.pendingTasksSettled = true;
    const serviceGone = (): boolean => this.stopReason?.kind === 'ended' || this.stopReason?.kind === 'unreachable';
    const running = [...this.taskStatus].filter(([, status]) => status === 'running').map(([name]) => name);
    for (const name of running) {
      if (!serviceGone()) {
        await this.report(name, 'failed');
      }
    }

    const pending = [...this.taskStatus].filter(([, status]) => status === 'pending').map(([name]) => name);
    if (pending.length === 0) {
      return;
    }
    this.line(`Skipping task(s): ${pending.join(', ')}.`);
    for (const name of pending) {
      if (!serviceGone()) {
        await this.report(name, 'skipped');
      }
    }
  }

  /**
   * Kills process groups that tasks left running in the background, since
   * nothing else ends them locally, and stops gpg-agent when gpg ran.
   */
  private async stopBackgroundProcesses(): Promise<void> {
    const groups = this.processGroups.splice(0);
    const results = await Promise.all(groups.map(async ({ task, group }) => ({ task, killed: await killProcessGroup(group) })));
    for (const { task, killed } of results) {
      if (killed) {
        this.line(`Stopped background processes that task ${task} left running.`);
      }
    }
    if (this.gpgRan) {
      this.gpgRan = false;
      await this.stopGpgAgent();
    }
  }

  /** Stops the build user's gpg-agent, which runs in a session of its own and so escapes the process group kills. */
  private async stopGpgAgent(): Promise<void> {
    const environment = buildEnvironment(this.home, this.user, process.env.PATH);
    if (!(await findExecutable('gpgconf', environment.PATH))) {
      this.line('NOTE: gpgconf is not installed, so a gpg-agent that gpg started may keep running.');
      return;
    }
    const result = await this.runBuildCommand({
      argv: ['gpgconf', '--kill', 'gpg-agent'],
      cwd: this.home,
      env: environment,
      user: this.user,
      output: this.requireSetupLog(),
      // The job's own signal may be aborted by now, and this cleanup must run anyway.
      signal: new AbortController().signal,
    });
    if (result.exitCode !== 0) {
      this.line(`Stopping gpg-agent failed (gpgconf: ${describeResult(result)}).`);
    }
  }

  /** Writes the final status, uploads the setup log a last time and completes the job. */
  private async finish(): Promise<number> {
    const status = this.finalStatus();
    if (status === 'success') {
      this.line(this.completedBy === null ? 'Job succeeded.' : `Job succeeded (complete-build in task ${this.completedBy}).`);
    } else if (status === 'timeout') {
      this.line(`Job timed out: the deadline ${this.job.deadline} passed.`);
    } else if (status === 'failed') {
      this.line(`Job failed: ${this.failure ?? 'no reason recorded'}.`);
    } else {
      this.line('Job ended: the service no longer accepts reports for it, so the runner stops without completing it.');
    }
    // The reason can quote build output, such as a source URL, so it is masked like the logs.
    const reason = this.failure === null ? undefined : this.maskSecrets(this.failure);
    this.logger.info({ status: status ?? 'ended', reason }, 'job finished');
    await this.setup?.finish();

    if (status === null) {
      return EXIT_FAILED;
    }
    try {
      await this.client.complete(status === 'failed' ? { status, reason } : { status });
    } catch (error) {
      this.logger.error({ err: errorMessage(error), status }, 'complete failed');
      return EXIT_FAILED;
    }
    return status === 'success' ? EXIT_SUCCESS : EXIT_FAILED;
  }

  /** Returns the text with the job's secret values masked, for text that leaves the runner outside a log. */
  private maskSecrets(text: string): string {
    if (this.secretMatcher === null) {
      return text;
    }
    return new SecretMasker(this.secretMatcher).mask(Buffer.from(text, 'utf8')).toString('utf8');
  }

  /** Returns the status for `complete`, or null when the service has already ended the job. */
  private finalStatus(): RunnerJobStatus | null {
    switch (this.stopReason?.kind) {
      case 'ended':
        return null;
      case 'timeout':
        return 'timeout';
      case 'signal':
      case 'unreachable':
        return 'failed';
      default:
        return this.failure === null ? 'success' : 'failed';
    }
  }

  /** Sends a task update. Returns false when the work must stop because the service rejected the update or could not be reached. */
  private async report(task: string, status: RunnerTaskStatus): Promise<boolean> {
    try {
      await this.client.updateTask(task, status);
      this.taskStatus.set(task, status);
      return true;
    } catch (error) {
      this.stopAfterServiceError(error);
      return false;
    }
  }

  private stopAfterServiceError(error: unknown): void {
    if (error instanceof JobEndedError) {
      this.stop({ kind: 'ended', message: error.message });
    } else if (error instanceof RunnerApiError) {
      this.stop({ kind: 'unreachable', message: error.message });
      this.fail(`the runner could not report to the service: ${error.message}`);
    } else {
      throw error;
    }
  }

  /** Aborts the work once. Later calls keep the first reason. */
  private stop(reason: StopReason): void {
    if (this.stopReason !== null) {
      return;
    }
    this.stopReason = reason;
    if (reason.kind === 'signal') {
      this.fail(`the runner received ${reason.signal}`);
    }
    this.line(this.stopSentence(reason));
    this.logger.warn({ reason: reason.kind }, 'stopping the job');
    this.controller.abort(reason);
  }

  private stopSentence(reason: StopReason): string {
    switch (reason.kind) {
      case 'timeout':
        return `The job reached its deadline ${this.job.deadline}.`;
      case 'signal':
        return `The runner received ${reason.signal} and stops the job.`;
      case 'ended':
        return `The service reports that the job has already ended: ${reason.message}.`;
      case 'unreachable':
        return `The runner gives up on the service: ${reason.message}.`;
    }
  }

  private fail(reason: string): void {
    this.failure ??= reason;
  }

  private requireSetupLog(): LogWriter {
    if (this.setup === null) {
      throw new Error('the setup log is not open');
    }
    return this.setup;
  }

  private line(text: string): void {
    this.setup?.writeLine(text);
  }

  /** Starts a timer that stops the job at its deadline, re-arming it to get past setTimeout's limit of about 24.8 days. */
  private startDeadlineTimer(): { current: NodeJS.Timeout | undefined } {
    const deadline = Date.parse(this.job.deadline);
    const handle: { current: NodeJS.Timeout | undefined } = { current: undefined };
    if (Number.isNaN(deadline)) {
      this.line(`NOTE: The deadline ${JSON.stringify(this.job.deadline)} is not a timestamp, so the runner sets no time limit.`);
      return handle;
    }
    const arm = (): void => {
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        this.stop({ kind: 'timeout' });
        return;
      }
      handle.current = setTimeout(arm, Math.min(remaining, 2 ** 31 - 1));
    };
    arm();
    return handle;
  }

  private async openLog(request: LogUrlRequest, fileName: string, name: string): Promise<LogWriter> {
    const log = await LogWriter.open({
      name,
      file: path.join(this.config.stateDir, 'logs', fileName),
      maxBytes: this.job.logMaxBytes,
      logger: this.logger,
      requestUploadUrl: async () => {
        try {
          return await this.client.logUrl(request);
        } catch (error) {
          if (error instanceof JobEndedError) {
            this.stop({ kind: 'ended', message: error.message });
          }
          throw error;
        }
      },
      shouldRetry: (error) => !(error instanceof RunnerApiError && error.status !== null && error.status < 500 && error.status !== 429),
    });
    if (this.secretMatcher !== null) {
      log.maskSecrets(this.secretMatcher);
    }
    return log;
  }
}

/**
 * Parses a source with the manifest's parser, the one that validated it at
 * submit. Returns the parsed source, or the reason it is invalid with any URL
 * password hidden.
 */
function parseSourceOrReason(source: string): ParsedSource | string {
  try {
    return parseSource(source);
  } catch (error) {
    if (error instanceof ValidationError) {
      return hideUrlPassword(error.errors.map((entry) => entry.reason).join(' '));
    }
    throw error;
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
