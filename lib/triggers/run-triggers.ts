import { randomUUID } from 'node:crypto';
import type { JobEndListener, ServiceContext } from '../context.js';
import type { DeliveryInfo } from '../dispatch/dispatch-job.js';
import { KilnError } from '../errors.js';
import { loadGroupJobs } from '../jobs/groups.js';
import { isFinal, type JobStatus } from '../jobs/state.js';
import type { Logger } from '../logger.js';
import type { Trigger, TriggerCondition } from '../manifest/types.js';
import { parseJobMessage, type JobQueue } from '../queue/job-queue.js';
import type { GroupRecord, JobRecord } from '../store/index.js';
import { runEmailTrigger, runWebhookTrigger, type TriggerRuntime, type TriggerTarget } from './actions.js';
import { composeGroupEmail, composeJobEmail, triggerMessageId } from './email.js';
import { renderTriggerGroup, renderTriggerJob } from './payload.js';

/** A trigger that another delivery is sending right now; the message is delivered again later to check on it. */
export class TriggerBusyError extends KilnError {
  override name = 'TriggerBusyError';
}

/** Checks whether a trigger with `condition` fires for a job or group that ended with `status`. `failure` covers failed, timeout and cancelled. */
export function conditionMatches(condition: TriggerCondition, status: JobStatus): boolean {
  if (condition === 'always') return true;
  if (condition === 'success') return status === 'success';

  return status === 'failed' || status === 'timeout' || status === 'cancelled';
}

/** Checks whether a job that ended needs its triggers run: it has triggers, or its group may have. */
export function needsTriggerRun(job: JobRecord): boolean {
  return job.spec.triggers.length > 0 || job.triggers.length > 0 || job.groupId !== null;
}

interface KeyedTrigger {
  /** The trigger's key within its job or group, such as `manifest#0`, `request#1` or `group#0`. */
  key: string;
  trigger: Trigger;
}

type TriggerResult = 'sent' | 'done before' | 'busy';

/**
 * Claims one trigger, sends it and records the outcome. A trigger that was
 * sent before is skipped, and one that another delivery has claimed is
 * reported busy. When sending throws, the claim is released so a later delivery can
 * send it.
 */
async function runTrigger(
  context: ServiceContext,
  runtime: TriggerRuntime,
  scope: string,
  target: TriggerTarget,
  { key, trigger }: KeyedTrigger,
  log: Logger,
): Promise<TriggerResult> {
  const store = context.stores.triggerRuns;
  const owner = randomUUID();
  const claim = await store.claim(scope, key, owner, Date.now() + runtime.leaseMs);
  if (claim.kind === 'done') {
    log.debug({ trigger: key, outcome: claim.outcome }, 'trigger ran before; skipped');
    return 'done before';
  }
  if (claim.kind === 'busy') {
    log.info({ trigger: key, leaseUntil: claim.leaseUntil }, 'trigger is being sent by another delivery');
    return 'busy';
  }

  let outcome: string;
  try {
    outcome =
      trigger.action === 'webhook'
        ? await runWebhookTrigger(context, runtime, target, trigger, log)
        : await runEmailTrigger(context, runtime, target, trigger, key, log);
  } catch (error) {
    await store.release(scope, key, owner).catch((releaseError: unknown) => {
      log.error({ err: releaseError, trigger: key }, 'failed to release a trigger claim');
    });
    throw error;
  }

  if (!(await store.complete(scope, key, owner, outcome))) {
    log.warn({ trigger: key }, 'trigger claim ran out while sending; another delivery may have sent it too');
  }
  log.info({ trigger: key, action: trigger.action, outcome }, 'trigger ran');

  return 'sent';
}

async function runAll(
  context: ServiceContext,
  runtime: TriggerRuntime,
  scope: string,
  target: TriggerTarget,
  triggers: readonly KeyedTrigger[],
  log: Logger,
): Promise<Array<PromiseSettledResult<TriggerResult>>> {
  return Promise.allSettled(triggers.map((keyed) => runTrigger(context, runtime, scope, target, keyed, log)));
}

function jobTarget(context: ServiceContext, job: JobRecord): TriggerTarget {
  return {
    label: '',
    jobs: [job],
    payload: renderTriggerJob(context, job),
    email: (trigger, key) => ({
      ...composeJobEmail(context, job),
      to: trigger.to,
      cc: trigger.cc ?? null,
      inReplyTo: trigger.in_reply_to ?? null,
      messageId: triggerMessageId(context, `job-${job.id}`, key),
      date: new Date(),
    }),
  };
}

function groupTarget(context: ServiceContext, group: GroupRecord, jobs: readonly JobRecord[], status: 'success' | 'failed'): TriggerTarget {
  return {
    label: `Job group #${group.id}`,
    jobs,
    payload: renderTriggerGroup(context, group, jobs),
    email: (trigger, key) => ({
      ...composeGroupEmail(context, group, jobs, status),
      to: trigger.to,
      cc: trigger.cc ?? null,
      inReplyTo: trigger.in_reply_to ?? null,
      messageId: triggerMessageId(context, `group-${group.id}`, key),
      date: new Date(),
    }),
  };
}

/**
 * Runs a group's triggers once every job of the group has ended. The group
 * succeeded when all its jobs did. Each trigger is claimed like a job's, so
 * when the last two jobs end at once and both messages get here, each
 * trigger is still sent once. `triggersRunAt` records when all were done.
 */
async function runGroupTriggers(
  context: ServiceContext,
  runtime: TriggerRuntime,
  groupId: number,
  log: Logger,
): Promise<Array<PromiseSettledResult<TriggerResult>>> {
  const group = await context.stores.groups.find(groupId);
  if (group === null || group.triggersRunAt !== null) return [];

  const jobs = await loadGroupJobs(context, group);
  if (!jobs.every((member) => isFinal(member.status))) return [];

  const status = jobs.every((member) => member.status === 'success') ? 'success' : 'failed';
  const triggers = group.triggers
    .map((trigger, index) => ({ key: `group#${index}`, trigger }))
    .filter(({ trigger }) => conditionMatches(trigger.condition, status));
  const groupLog = log.child({ groupId });
  const results = await runAll(context, runtime, `GROUP#${groupId}`, groupTarget(context, group, jobs, status), triggers, groupLog);

  if (results.every((result) => result.status === 'fulfilled' && result.value !== 'busy')) {
    await context.stores.groups.markTriggersRun(groupId, Date.now());
    groupLog.info({ status, triggers: triggers.length }, 'job group triggers ran');
  }

  return results;
}

/**
 * Runs the triggers of a job that has ended: the manifest's and the
 * request's whose condition matches, then, when the job is in a group whose
 * jobs have all ended, the group's. Safe to call again for the same job:
 * triggers already sent are skipped. After all of them ran, throws when one
 * could not be claimed or sent for a reason that a later delivery may
 * overcome, such as a store error or another delivery holding it.
 */
export async function runJobTriggers(context: ServiceContext, runtime: TriggerRuntime, jobId: number): Promise<void> {
  const log = context.logger.child({ jobId });
  const job = await context.stores.jobs.find(jobId);
  if (job === null) {
    log.warn('trigger message for a job that does not exist; dropped');
    return;
  }
  if (!isFinal(job.status)) {
    log.warn({ status: job.status }, 'trigger message for a job that has not ended; dropped');
    return;
  }

  const triggers = [
    ...job.spec.triggers.map((trigger, index) => ({ key: `manifest#${index}`, trigger })),
    ...job.triggers.map((trigger, index) => ({ key: `request#${index}`, trigger })),
  ].filter(({ trigger }) => conditionMatches(trigger.condition, job.status));
  const results = triggers.length > 0 ? await runAll(context, runtime, `JOB#${job.id}`, jobTarget(context, job), triggers, log) : [];
  if (job.groupId !== null) results.push(...(await runGroupTriggers(context, runtime, job.groupId, log)));

  const failure = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failure) throw failure.reason;
  if (results.some((result) => result.status === 'fulfilled' && result.value === 'busy')) {
    throw new TriggerBusyError(`another delivery is sending a trigger of job ${jobId}; the message will be delivered again to check on it`);
  }
}

/**
 * Handles one triggers queue message, `{"jobId": N}`, the same on SQS and
 * on the local queue. An error is thrown back so that the queue delivers the
 * message again.
 */
export async function consumeTriggerMessage(
  context: ServiceContext,
  runtime: TriggerRuntime,
  body: string,
  delivery: DeliveryInfo,
): Promise<void> {
  const message = parseJobMessage(body);
  if (message === null) {
    context.logger.error({ body: body.slice(0, 200) }, 'dropped a triggers queue message that is not a job message');
    return;
  }

  try {
    await runJobTriggers(context, runtime, message.jobId);
  } catch (error) {
    const log = context.logger.child({ jobId: message.jobId });
    if (delivery.receiveCount < delivery.maxReceives) {
      log.warn({ err: error, receiveCount: delivery.receiveCount }, 'triggers failed; the queue will deliver again');
    } else {
      log.error({ err: error, receiveCount: delivery.receiveCount }, 'triggers failed on the last receive');
    }
    throw error;
  }
}

/**
 * Hands each ended job that has triggers, or is in a group, to the triggers
 * queue. Only the send happens here, so ending a job stays fast; the queue's
 * consumer runs the triggers.
 */
export class TriggerQueueListener implements JobEndListener {
  constructor(private readonly queue: JobQueue) {}

  async jobEnded(job: JobRecord): Promise<void> {
    if (!needsTriggerRun(job)) return;

    await this.queue.send(job.id);
  }
}
