import { SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';

/** The body of every job queue message, on SQS and on the local stack alike. */
export interface JobMessage {
  jobId: number;
}

/** The queue that job ids go to for dispatch. Delivery is at least once. */
export interface JobQueue {
  send(jobId: number, delaySeconds?: number): Promise<void>;
}

/** Reads a queue message body; returns null for a body that is not a job message. */
export function parseJobMessage(body: string): JobMessage | null {
  try {
    const value = JSON.parse(body) as unknown;
    if (typeof value === 'object' && value !== null && Number.isSafeInteger((value as JobMessage).jobId)) {
      return { jobId: (value as JobMessage).jobId };
    }
  } catch {
    // Falls through: not JSON.
  }

  return null;
}

/** SQS caps a message delay at 15 minutes. */
const MAX_SQS_DELAY_SECONDS = 900;

export class SqsJobQueue implements JobQueue {
  constructor(
    private readonly sqs: SQSClient,
    private readonly queueUrl: string,
  ) {}

  async send(jobId: number, delaySeconds = 0): Promise<void> {
    const message: JobMessage = { jobId };
    try {
      await this.sqs.send(
        new SendMessageCommand({
          QueueUrl: this.queueUrl,
          MessageBody: JSON.stringify(message),
          DelaySeconds: Math.min(Math.max(0, Math.round(delaySeconds)), MAX_SQS_DELAY_SECONDS),
        }),
      );
    } catch (error) {
      throw new Error(`failed to queue job ${jobId}`, { cause: error });
    }
  }
}
