import type { Logger } from '../../lib/logger.js';
import type { DeliveryInfo } from '../../lib/dispatch/dispatch-job.js';
import type { JobMessage, JobQueue } from '../../lib/queue/job-queue.js';

export type MessageHandler = (body: string, delivery: DeliveryInfo) => Promise<void>;

export interface MemoryQueueOptions {
  logger: Logger;
  /** Receives before a failing message is dropped, as an SQS redrive policy would move it to a dead-letter queue. */
  maxReceives?: number;
  /** Delay before a failed message is delivered again, doubled on each receive, in ms. */
  redeliveryDelayMs?: number;
}

/**
 * An in-process stand-in for the SQS job queue. It feeds the same consumer
 * with the same message bodies, at least once: a message whose handler throws
 * is delivered again after a delay until `maxReceives`.
 */
export class MemoryQueue implements JobQueue {
  private handler: MessageHandler | null = null;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly inFlight = new Set<Promise<void>>();
  private closed = false;
  private readonly maxReceives: number;
  private readonly redeliveryDelayMs: number;

  constructor(private readonly options: MemoryQueueOptions) {
    this.maxReceives = options.maxReceives ?? 5;
    this.redeliveryDelayMs = options.redeliveryDelayMs ?? 1000;
  }

  /** Sets the consumer; messages sent before this wait for it. */
  consume(handler: MessageHandler): void {
    this.handler = handler;
  }

  async send(jobId: number, delaySeconds = 0): Promise<void> {
    const message: JobMessage = { jobId };
    this.schedule(JSON.stringify(message), 1, delaySeconds * 1000);
  }

  /** Stops delivering and waits for the deliveries under way. */
  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    await Promise.allSettled([...this.inFlight]);
  }

  private schedule(body: string, receiveCount: number, delayMs: number): void {
    if (this.closed) return;

    const timer = setTimeout(() => {
      this.timers.delete(timer);
      const delivery = this.deliver(body, receiveCount);
      this.inFlight.add(delivery);
      void delivery.finally(() => this.inFlight.delete(delivery));
    }, delayMs);
    this.timers.add(timer);
  }

  private async deliver(body: string, receiveCount: number): Promise<void> {
    if (this.closed) return;
    if (!this.handler) {
      this.schedule(body, receiveCount, 100);
      return;
    }

    try {
      await this.handler(body, { receiveCount, maxReceives: this.maxReceives });
    } catch (error) {
      if (receiveCount >= this.maxReceives) {
        this.options.logger.error({ err: error, body, receiveCount }, 'queue message failed on its last receive; dropped');
        return;
      }
      this.schedule(body, receiveCount + 1, this.redeliveryDelayMs * 2 ** (receiveCount - 1));
    }
  }
}
