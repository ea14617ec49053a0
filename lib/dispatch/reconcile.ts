import type { ServiceContext } from '../context.js';
import { finishJob } from '../jobs/lifecycle.js';
import { releaseDispatch } from './dispatch-job.js';

/** Time past a job's deadline that its runner gets to report `timeout` itself before the service does. */
export const TIMEOUT_GRACE_MS = 30_000;

/** Time a launched runner gets to claim its job before the service fails it. */
export const CLAIM_TIMEOUT_MS = 10 * 60_000;

/**
 * Ends jobs whose runner missed its deadline or never claimed the job, and
 * stops their runners. Returns the ids of the jobs it ended.
 */
export async function reconcileJobs(context: ServiceContext, now = Date.now()): Promise<number[]> {
  const ended: number[] = [];
  for (const job of await context.stores.jobs.listActive()) {
    if (job.status === 'running' && job.deadline !== null && job.deadline + TIMEOUT_GRACE_MS < now) {
      const minutes = Math.round(context.settings.jobTimeoutMs / 60_000);
      const reason = `Job timed out: it ran past its limit of ${minutes} minutes (KILN_JOB_TIMEOUT) and its runner did not stop it`;
      const { changed } = await finishJob(context, job.id, 'timeout', { reason, stopRunner: true, from: ['running'] });
      if (changed) ended.push(job.id);
    }

    if (job.status === 'queued' && job.dispatchedAt !== null && job.dispatchedAt + CLAIM_TIMEOUT_MS < now) {
      const reason = `The build's runner did not start within ${CLAIM_TIMEOUT_MS / 60_000} minutes`;
      const { changed } = await finishJob(context, job.id, 'failed', { reason, stopRunner: true, from: ['queued'] });
      if (changed) ended.push(job.id);
    }
  }

  return ended;
}

/**
 * Brings jobs back in order after the local stack restarts: jobs whose runner
 * was running end `failed` with the reason in their setup log, jobs that
 * waited in the queue, or whose runner had not claimed them yet, are queued again, and the running slots are recounted.
 */
export async function recoverAfterRestart(context: ServiceContext): Promise<{ failed: number[]; requeued: number[] }> {
  const failed: number[] = [];
  const requeued: number[] = [];
  for (const job of await context.stores.jobs.listActive()) {
    if (job.status === 'running') {
      const reason = 'The local stack stopped while this job ran, so its runner was stopped; submit the job again';
      const { changed } = await finishJob(context, job.id, 'failed', { reason });
      if (changed) failed.push(job.id);
    } else if (job.status === 'queued') {
      await releaseDispatch(context, job.id);
      await context.queue.send(job.id);
      requeued.push(job.id);
    }
  }
  await context.stores.slots.reset(new Map());

  return { failed, requeued };
}
