import type { ServiceContext } from '../context.js';
import { finishJob } from '../jobs/lifecycle.js';
import { parseJobMessage } from '../queue/job-queue.js';
import { dispatchJob, type DeliveryInfo } from './dispatch-job.js';

/**
 * Handles one job queue message, the same on SQS and on the local queue. A
 * job that must wait is sent again with a delay. An error is thrown back, so
 * the queue delivers the message again, except on its last receive, where the
 * job fails with the reason instead of disappearing into the dead-letter queue.
 */
export async function consumeJobMessage(context: ServiceContext, body: string, delivery: DeliveryInfo): Promise<void> {
  const message = parseJobMessage(body);
  if (message === null) {
    context.logger.error({ body: body.slice(0, 200) }, 'dropped a queue message that is not a job message');
    return;
  }

  const log = context.logger.child({ jobId: message.jobId });
  try {
    const outcome = await dispatchJob(context, message.jobId, delivery);
    if (outcome.kind === 'retry') {
      log.debug({ detail: outcome.detail, delaySeconds: outcome.delaySeconds }, 'job waits in queue');
      await context.queue.send(message.jobId, outcome.delaySeconds);
    }
  } catch (error) {
    if (delivery.receiveCount < delivery.maxReceives) {
      log.warn({ err: error, receiveCount: delivery.receiveCount }, 'dispatch failed; the queue will deliver again');
      throw error;
    }

    log.error({ err: error }, 'dispatch failed on the last receive; failing job');
    const reason = `Failed to dispatch the job after ${delivery.receiveCount} attempts: ${(error as Error).message}`;
    await finishJob(context, message.jobId, 'failed', { reason, stopRunner: true });
  }
}
