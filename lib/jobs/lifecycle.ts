import type { ServiceContext } from '../context.js';
import { StateError } from '../errors.js';
import { setupLogKey } from '../logs/log-store.js';
import type { JobRecord } from '../store/index.js';
import { canMoveJob, describeState, isFinal, type JobStatus } from './state.js';

export type FinalStatus = Extract<JobStatus, 'success' | 'failed' | 'timeout' | 'cancelled'>;

export interface FinishOptions {
  /** A line for the setup log saying why the service ended the job. */
  reason?: string;
  /** Stop the job's runner too; for cancel and for timeouts that the runner missed. */
  stopRunner?: boolean;
  /** Move only from these states; by default from any state that is not final. */
  from?: readonly JobStatus[];
}

/**
 * Ends a job: the running task becomes `failed`, the tasks not yet run become
 * `skipped`, the job's tokens stop working (but for last log uploads, see
 * authenticateRunner) and its running slot is given back. Returns the job as it is afterwards, and whether this call ended
 * it; a job that has already ended is left as it is.
 */
export async function finishJob(
  context: ServiceContext,
  jobId: number,
  status: FinalStatus,
  options: FinishOptions = {},
): Promise<{ job: JobRecord; changed: boolean }> {
  let before: JobRecord | null = null;
  const job = await context.stores.jobs.transition(jobId, (current) => {
    before = null;
    if (isFinal(current.status)) return null;
    if (options.from && !options.from.includes(current.status)) return null;
    if (!canMoveJob(current.status, status)) return null;

    before = structuredClone(current);
    return {
      ...current,
      status,
      tasks: current.tasks.map((task) => {
        if (task.status === 'running') return { ...task, status: status === 'success' ? 'success' : 'failed' };
        if (task.status === 'pending') return { ...task, status: 'skipped' };
        return task;
      }),
      jobTokenHash: null,
      holdsSlot: false,
      finishedAt: Date.now(),
      failureReason: options.reason ?? current.failureReason,
    };
  });

  const previous = before as JobRecord | null;
  if (previous === null) return { job, changed: false };

  const log = context.logger.child({ jobId });
  if (previous.holdsSlot) await context.stores.slots.release(job.owner);
  if (options.stopRunner && previous.runner) {
    await context.launcher.stop(jobId, previous.runner, options.reason ?? status).catch((error: unknown) => {
      log.error({ err: error, runner: previous.runner }, 'failed to stop runner');
    });
  }
  if (options.reason && previous.runner !== null) {
    await context.logs.append(setupLogKey(jobId), `[kiln] ${options.reason}`).catch((error: unknown) => {
      log.error({ err: error }, 'failed to append to setup log');
    });
  }
  log.info({ status, from: previous.status, reason: options.reason }, 'job finished');
  await context.jobEnd.jobEnded(job).catch((error: unknown) => {
    log.error({ err: error }, 'failed to hand the ended job to its triggers');
  });

  return { job, changed: true };
}

/**
 * Cancels a job that has not ended. A running job's runner is stopped with
 * every process of the build; its running task becomes `failed`.
 */
export async function cancelJob(context: ServiceContext, jobId: number): Promise<JobRecord> {
  const { job, changed } = await finishJob(context, jobId, 'cancelled', {
    reason: 'The job was cancelled',
    stopRunner: true,
  });
  if (!changed) throw new StateError(`This job has already finished (${job.status})`);

  return job;
}

/** Moves a pending job to queued and sends it to the queue. */
export async function startJob(context: ServiceContext, jobId: number): Promise<JobRecord> {
  const job = await context.stores.jobs.transition(jobId, (current) => {
    if (current.status !== 'pending') {
      throw new StateError(`This job is already ${describeState(current.status)}`);
    }

    return { ...current, status: 'queued' };
  });
  await context.queue.send(jobId);

  return job;
}
