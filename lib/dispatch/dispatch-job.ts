import { createHash } from 'node:crypto';
import type { ServiceContext } from '../context.js';
import { finishJob } from '../jobs/lifecycle.js';
import { generateToken, hashToken } from '../auth/tokens.js';
import { isFinal } from '../jobs/state.js';
import { CapacityError } from '../launchers/launcher.js';

/** The outcome of one delivery of a job message. */
export type DispatchOutcome =
  | { kind: 'done'; detail: string }
  /** The job stays queued; the message is to be delivered again after the delay. */
  | { kind: 'retry'; delaySeconds: number; detail: string };

export interface DeliveryInfo {
  /** How many times this message has been received, from 1. */
  receiveCount: number;
  /** Receives after which the queue gives up on the message. */
  maxReceives: number;
}

/** Delay before a job that waits for a running slot is looked at again. */
export const SLOT_WAIT_SECONDS = 2;
/** Delay after a capacity, quota or throttling error from the launcher. */
export const CAPACITY_RETRY_SECONDS = 30;

/** Job tokens carry the job id so that the claim finds its job without a lookup table. */
export function createJobToken(jobId: number): string {
  return generateToken(`kilnjob_${jobId}`);
}

/** Reads the job id out of a job or session token; null when the token has another form. */
export function jobIdOfToken(token: string): number | null {
  const match = /^kiln(?:job|run)_(\d+)_/.exec(token);

  return match ? Number(match[1]) : null;
}

/**
 * Launches a runner for a queued job when a running slot is free. Duplicate
 * deliveries and jobs that were cancelled meanwhile are acknowledged and
 * change nothing. A job over a running limit, or hit by a capacity error,
 * stays queued and is retried. Any other launch error fails the job.
 */
export async function dispatchJob(context: ServiceContext, jobId: number, delivery: DeliveryInfo): Promise<DispatchOutcome> {
  const { jobs, slots } = context.stores;
  const log = context.logger.child({ jobId });

  const job = await jobs.find(jobId);
  if (!job) return { kind: 'done', detail: 'job not found' };
  if (job.status !== 'queued') return { kind: 'done', detail: `job is ${job.status}` };
  if (job.dispatchedAt !== null) return { kind: 'done', detail: 'job already dispatched' };

  const limits = { maxRunning: context.settings.maxRunning, maxRunningPerUser: context.settings.maxRunningPerUser };
  if (!(await slots.acquire(job.owner, limits))) {
    return { kind: 'retry', delaySeconds: SLOT_WAIT_SECONDS, detail: 'running limit reached' };
  }

  const jobToken = createJobToken(jobId);
  let attempt = 0;
  const recorded = await jobs.transition(jobId, (current) => {
    attempt = 0;
    if (current.status !== 'queued' || current.dispatchedAt !== null) return null;

    attempt = current.dispatchAttempt + 1;
    return {
      ...current,
      dispatchAttempt: attempt,
      dispatchedAt: Date.now(),
      jobTokenHash: hashToken(jobToken),
      holdsSlot: true,
    };
  });
  if (attempt === 0) {
    await slots.release(job.owner);
    return { kind: 'done', detail: `job is ${recorded.status}, already dispatched or ended` };
  }

  try {
    const runner = await context.launcher.launch({
      jobId,
      jobToken,
      attempt,
      image: recorded.spec.canonicalImage,
      arch: recorded.spec.arch,
    });
    const named = await jobs.transition(jobId, (current) =>
      isFinal(current.status) || current.runner === runner ? null : { ...current, runner },
    );
    if (isFinal(named.status)) {
      // The job was cancelled while its runner started; the runner's claim would fail, but stop it now.
      log.info({ runner, status: named.status }, 'job ended during launch; stopping its runner');
      await context.launcher.stop(jobId, runner, `job ${named.status} during launch`);
      return { kind: 'done', detail: `job ${named.status} during launch` };
    }
    log.info({ runner, attempt }, 'runner launched');

    return { kind: 'done', detail: `launched ${runner}` };
  } catch (error) {
    return handleLaunchError(context, jobId, error, delivery);
  }
}

async function handleLaunchError(
  context: ServiceContext,
  jobId: number,
  error: unknown,
  delivery: DeliveryInfo,
): Promise<DispatchOutcome> {
  const log = context.logger.child({ jobId });
  const message = error instanceof Error ? error.message : String(error);
  const lastReceive = delivery.receiveCount >= delivery.maxReceives;

  if (error instanceof CapacityError && !lastReceive) {
    log.warn({ err: error }, 'launch hit a capacity limit; job stays queued');
    await releaseDispatch(context, jobId);

    return { kind: 'retry', delaySeconds: CAPACITY_RETRY_SECONDS, detail: message };
  }

  log.error({ err: error }, 'launch failed; failing job');
  await finishJob(context, jobId, 'failed', { reason: `Failed to start the build's runner: ${message}` });

  return { kind: 'done', detail: `launch failed: ${message}` };
}

/** Undoes a recorded dispatch so the job can be launched again, giving back its slot. */
export async function releaseDispatch(context: ServiceContext, jobId: number): Promise<void> {
  let heldSlot = false;
  const job = await context.stores.jobs.transition(jobId, (current) => {
    heldSlot = false;
    if (current.status !== 'queued' || current.dispatchedAt === null) return null;

    heldSlot = current.holdsSlot;
    return { ...current, dispatchedAt: null, jobTokenHash: null, holdsSlot: false, runner: null };
  });
  if (heldSlot) await context.stores.slots.release(job.owner);
}

/** Derives a stable ECS client token for one launch attempt, so that a retried RunTask starts no second task. */
export function launchClientToken(jobId: number, attempt: number): string {
  return createHash('sha256').update(`kiln-job-${jobId}-attempt-${attempt}`).digest('hex').slice(0, 64);
}
