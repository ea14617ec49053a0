/**
 * Entry point of the runner, the program that runs one build job:
 *
 *   node --import tsx lib/runner/main.ts
 *
 * It reads KILN_API_URL, KILN_JOB_ID, KILN_JOB_TOKEN, KILN_BUILD_HOME,
 * KILN_RUNNER_STATE_DIR, and optionally KILN_BUILD_USER and
 * KILN_RUNNER_NAME. It writes its own diagnostics as JSON lines to stderr.
 * The exit code is 0 when the job succeeded, 1 when it did not, and 2 when
 * the claim failed or a variable is missing.
 */
import pino from 'pino';
import { EXIT_CLAIM_FAILED, EXIT_FAILED, runJob, type RunnerConfig } from './run-job.js';

const REQUIRED_VARIABLES = ['KILN_API_URL', 'KILN_JOB_ID', 'KILN_JOB_TOKEN', 'KILN_BUILD_HOME', 'KILN_RUNNER_STATE_DIR'] as const;

async function main(): Promise<number> {
  const environment = process.env;
  const logger = pino(
    { base: { jobId: environment.KILN_JOB_ID ?? null }, formatters: { level: (label) => ({ level: label }) } },
    pino.destination({ fd: 2, sync: true }),
  );

  const missing = REQUIRED_VARIABLES.filter((name) => !environment[name]);
  if (missing.length > 0) {
    logger.error({ missing }, `missing environment variables: ${missing.join(', ')}; the service sets them when it launches the runner`);
    return EXIT_CLAIM_FAILED;
  }
  const config: RunnerConfig = {
    apiUrl: environment.KILN_API_URL!,
    jobId: environment.KILN_JOB_ID!,
    jobToken: environment.KILN_JOB_TOKEN!,
    buildHome: environment.KILN_BUILD_HOME!,
    stateDir: environment.KILN_RUNNER_STATE_DIR!,
    buildUser: environment.KILN_BUILD_USER || undefined,
    runnerName: environment.KILN_RUNNER_NAME || undefined,
  };

  // The first SIGTERM or SIGINT stops the job cleanly, and a second one exits at once.
  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stop.signal.aborted) {
      logger.warn({ signal }, 'second signal, exiting without cleanup');
      process.exit(EXIT_FAILED);
    }
    logger.warn({ signal }, 'signal received, stopping the job');
    stop.abort(signal);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  logger.info({ apiUrl: config.apiUrl }, 'runner started');
  try {
    const code = await runJob(config, logger, stop.signal);
    logger.info({ exitCode: code }, 'runner exiting');
    return code;
  } catch (error) {
    logger.error({ err: error instanceof Error ? error.message : String(error) }, 'runner failed');
    return EXIT_FAILED;
  }
}

// An explicit exit, because a handle that a build left open (a pipe, a socket) must not keep the runner alive.
process.exit(await main());
