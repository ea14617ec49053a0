import type { ServiceContext } from '../context.js';
import { generateToken, hashToken } from '../auth/tokens.js';
import { jobIdOfToken } from '../dispatch/dispatch-job.js';
import { AuthenticationError, KilnError, NotFoundError, StateError, ValidationError } from '../errors.js';
import { setupLogKey, taskLogKey } from '../logs/log-store.js';
import {
  RUNNER_PROTOCOL_VERSION,
  type ClaimResponse,
  type CompleteRequest,
  type LogUrlRequest,
  type LogUrlResponse,
  type TaskUpdateRequest,
} from '../runner/protocol.js';
import type { JobRecord } from '../store/index.js';
import { finishJob } from './lifecycle.js';
import { canMoveTask, isFinal, type TaskStatus } from './state.js';

/** Raised when the job has ended, so the runner must stop. The API returns 409 for it. */
export class JobEndedError extends KilnError {
  override name = 'JobEndedError';
}

/** Returns the public address of a job, exported to builds as JOB_URL. */
export function jobUrl(context: ServiceContext, jobId: number): string {
  return `${context.publicUrl}/api/jobs/${jobId}`;
}

/**
 * Exchanges a one-time job token for a session token and moves the job to
 * `running`, with its deadline counted from now.
 */
export async function claimJob(
  context: ServiceContext,
  jobToken: string,
  request: { protocol?: unknown; runner?: unknown },
): Promise<ClaimResponse> {
  const { protocol, runner } = request;
  if (protocol !== RUNNER_PROTOCOL_VERSION) {
    throw ValidationError.of('protocol', `runner protocol ${String(protocol)} is not supported; this service speaks ${RUNNER_PROTOCOL_VERSION}`);
  }
  const jobId = jobIdOfToken(jobToken);
  if (jobId === null) throw new AuthenticationError('Invalid job token');

  const sessionToken = generateToken(`kilnrun_${jobId}`);
  const job = await context.stores.jobs.transition(jobId, (current) => {
    if (current.jobTokenHash === null || current.jobTokenHash !== hashToken(jobToken)) {
      throw new AuthenticationError('Invalid job token: it was never issued, or it was used already');
    }
    if (current.status !== 'queued') throw new JobEndedError(`Job ${jobId} is ${current.status}; it cannot be claimed`);
    if (current.runner !== null && current.runner !== 'local' && runner !== current.runner) {
      throw new AuthenticationError(`Job ${jobId} is assigned to runner ${current.runner}, not ${String(runner)}`);
    }

    const now = Date.now();
    return {
      ...current,
      status: 'running',
      jobTokenHash: null,
      sessionTokenHash: hashToken(sessionToken),
      claimedAt: now,
      deadline: now + context.settings.jobTimeoutMs,
    };
  });
  const spec = job.spec;

  return {
    protocol: RUNNER_PROTOCOL_VERSION,
    sessionToken,
    job: {
      id: job.id,
      url: jobUrl(context, job.id),
      image: spec.canonicalImage,
      arch: spec.arch,
      packages: spec.packages,
      repositories: spec.repositories,
      sources: spec.sources,
      environment: spec.environment,
      shell: spec.shell,
      artifacts: spec.artifacts,
      tasks: spec.tasks,
      deadline: new Date(job.deadline ?? Date.now()).toISOString(),
      logMaxBytes: context.settings.logMaxBytes,
    },
  };
}

/**
 * Time after the service ends a job (cancel, timeout) during which its runner
 * may still upload logs, so that the output up to the stop is kept. It matches
 * the time a stopped runner gets before it is killed.
 */
export const LAST_UPLOAD_GRACE_MS = 60_000;

/**
 * Checks a runner's session token against the job. Once the job has ended the
 * token is rejected with JobEndedError, except for log uploads during
 * {@link LAST_UPLOAD_GRACE_MS} when `forLogUpload` is set.
 */
export async function authenticateRunner(
  context: ServiceContext,
  jobId: number,
  sessionToken: string,
  options: { forLogUpload?: boolean } = {},
): Promise<JobRecord> {
  const job = await context.stores.jobs.find(jobId);
  if (!job) throw new NotFoundError(`Job ${jobId} not found`);
  if (job.sessionTokenHash === null || job.sessionTokenHash !== hashToken(sessionToken)) {
    throw new AuthenticationError('Invalid session token for this job');
  }
  if (isFinal(job.status)) {
    const inGrace = job.finishedAt !== null && Date.now() - job.finishedAt < LAST_UPLOAD_GRACE_MS;
    if (!(options.forLogUpload && inGrace)) throw new JobEndedError(`Job ${jobId} has ended (${job.status})`);
  }

  return job;
}

export async function createLogUploadUrl(
  context: ServiceContext,
  job: JobRecord,
  request: LogUrlRequest,
): Promise<LogUrlResponse> {
  if (request.log === 'setup') return context.logs.presignPut(setupLogKey(job.id));

  if (request.log === 'task' && job.tasks.some((task) => task.name === request.task)) {
    return context.logs.presignPut(taskLogKey(job.id, request.task));
  }

  throw ValidationError.of('log', 'expected {"log": "setup"} or {"log": "task", "task": "<name of a task of this job>"}');
}

const RUNNER_TASK_STATUSES: readonly TaskStatus[] = ['running', 'success', 'failed', 'skipped'];

/** Moves one task forward; repeating the current state is accepted, so a retried report is harmless. */
export async function updateTask(
  context: ServiceContext,
  jobId: number,
  taskName: string,
  request: TaskUpdateRequest,
): Promise<void> {
  if (!RUNNER_TASK_STATUSES.includes(request.status)) {
    throw ValidationError.of('status', `expected one of ${RUNNER_TASK_STATUSES.join(', ')}`);
  }

  await context.stores.jobs.transition(jobId, (current) => {
    if (isFinal(current.status)) throw new JobEndedError(`Job ${jobId} has ended (${current.status})`);

    const index = current.tasks.findIndex((task) => task.name === taskName);
    if (index === -1) throw new NotFoundError(`Job ${jobId} has no task named "${taskName}"`);

    const from = current.tasks[index].status;
    if (from === request.status) return null;
    if (!canMoveTask(from, request.status)) {
      throw new StateError(`Task "${taskName}" cannot move from ${from} to ${request.status}`);
    }

    const tasks = current.tasks.map((task, position) => (position === index ? { ...task, status: request.status } : task));
    return { ...current, tasks };
  });
}

const RUNNER_FINAL_STATUSES = ['success', 'failed', 'timeout'] as const;

export async function completeJob(context: ServiceContext, jobId: number, request: CompleteRequest): Promise<void> {
  if (!(RUNNER_FINAL_STATUSES as readonly string[]).includes(request.status)) {
    throw ValidationError.of('status', `expected one of ${RUNNER_FINAL_STATUSES.join(', ')}`);
  }

  const { changed, job } = await finishJob(context, jobId, request.status, { from: ['running'] });
  if (!changed) throw new JobEndedError(`Job ${jobId} has ended (${job.status})`);
  if (request.reason) context.logger.info({ jobId, reason: request.reason.slice(0, 500) }, 'runner reported failure');
}
