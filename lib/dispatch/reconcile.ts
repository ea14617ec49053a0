import type { ServiceContext } from '../context.js';
import type { JobRecord } from '../store/index.js';
import { finishJob } from '../jobs/lifecycle.js';
import { releaseDispatch } from './dispatch-job.js';
import { describeTaskStop, type RunnerState } from './task-stopped.js';

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
      const seconds = Math.round(context.settings.jobTimeoutMs / 1000);
      const limit = seconds % 60 === 0 ? `${seconds / 60} minutes` : `${seconds} seconds`;
      const reason = `Job timed out: it ran past its limit of ${limit} (KILN_JOB_TIMEOUT) and its runner did not stop it`;
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
 * Brings jobs back in order after the local stack restarts. Jobs whose runner
 * was running end `failed` with the reason in their setup log. Jobs that
 * waited in the queue, or whose runner had not claimed them yet, are queued
 * again. Then the running slots are recounted.
 */
export async function recoverAfterRestart(
  context: ServiceContext,
  options: { beforeFail?: (job: JobRecord) => Promise<void> } = {},
): Promise<{ failed: number[]; requeued: number[] }> {
  const failed: number[] = [];
  const requeued: number[] = [];
  for (const job of await context.stores.jobs.listActive()) {
    if (job.status === 'running') {
      await options.beforeFail?.(job);
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

/**
 * Time a queued job may go without a dispatch, while a running slot is free
 * for it, before its queue message counts as lost. A live message is looked
 * at every few seconds while its job waits for a slot.
 */
export const LOST_MESSAGE_AFTER_MS = 5 * 60_000;

/**
 * Sends the queue message again for queued jobs that have gone without a
 * dispatch for {@link LOST_MESSAGE_AFTER_MS} although the running limits
 * leave room for them. Jobs over a limit are skipped, because their message
 * is still going round. Returns the ids of the jobs sent again.
 */
export async function requeueLostJobs(context: ServiceContext, now = Date.now()): Promise<number[]> {
  const active = await context.stores.jobs.listActive();
  const runningByOwner = new Map<string, number>();
  let running = 0;
  for (const job of active) {
    if (!job.holdsSlot) continue;
    running += 1;
    runningByOwner.set(job.owner, (runningByOwner.get(job.owner) ?? 0) + 1);
  }

  const requeued: number[] = [];
  for (const job of active) {
    if (job.status !== 'queued' || job.dispatchedAt !== null) continue;
    if (now - job.updatedAt < LOST_MESSAGE_AFTER_MS) continue;

    const ownerRunning = runningByOwner.get(job.owner) ?? 0;
    if (running >= context.settings.maxRunning || ownerRunning >= context.settings.maxRunningPerUser) continue;

    await context.queue.send(job.id);
    requeued.push(job.id);
    context.logger.warn({ jobId: job.id, queuedForMs: now - job.updatedAt }, 'queued job had no dispatch; sent to the queue again');
  }

  return requeued;
}

/** Reports the state of runner tasks; the ECS launcher on AWS. */
export interface RunnerInspector {
  describeRunners(runners: readonly string[]): Promise<Map<string, RunnerState>>;
}

/**
 * Time after a launch before a runner that ECS reports as missing counts as
 * gone, because ECS's read API is eventually consistent and may not list a
 * task that was just started.
 */
export const RUNNER_LOOKUP_GRACE_MS = 2 * 60_000;

/**
 * Fails the jobs whose runner task has stopped or is gone without the runner
 * reporting the job's end, for example when the task-stopped event was lost.
 * Returns the ids of the jobs it failed.
 */
export async function failJobsOfLostRunners(
  context: ServiceContext,
  inspector: RunnerInspector,
  now = Date.now(),
): Promise<number[]> {
  const candidates = (await context.stores.jobs.listActive()).filter(
    (job) =>
      (job.status === 'running' || job.status === 'queued') &&
      job.runner !== null &&
      job.dispatchedAt !== null &&
      job.dispatchedAt + RUNNER_LOOKUP_GRACE_MS < now,
  );
  if (candidates.length === 0) return [];

  const states = await inspector.describeRunners(candidates.map((job) => job.runner as string));
  const failed: number[] = [];
  for (const job of candidates) {
    const runner = job.runner as string;
    const state = states.get(runner);
    if (state === undefined || state.state === 'active') continue;

    const reason =
      state.state === 'stopped'
        ? describeTaskStop(state.task)
        : `The build's container is gone: ECS no longer knows its task ${runner}, and the runner never reported the job's end`;
    const { changed } = await finishJob(context, job.id, 'failed', { reason, from: [job.status] });
    if (changed) {
      failed.push(job.id);
      context.logger.warn({ jobId: job.id, runner, state: state.state }, 'runner task is gone; job failed');
    }
  }

  return failed;
}
