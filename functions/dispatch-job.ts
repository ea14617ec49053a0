/**
 * Lambda entry point of the job queue consumer. Each SQS record is one job
 * message. A record whose handling throws is reported in `batchItemFailures`,
 * so SQS delivers only that record again.
 */
import type { SQSBatchItemFailure, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { awsRuntime } from '../lib/aws-context.js';
import type { ServiceContext } from '../lib/context.js';
import { consumeJobMessage } from '../lib/dispatch/consume.js';

/** Handles a batch of job messages and returns the records that SQS must deliver again. */
export async function consumeRecords(
  context: ServiceContext,
  records: readonly SQSRecord[],
  maxReceives: number,
): Promise<SQSBatchResponse> {
  const results = await Promise.allSettled(
    records.map((record) =>
      consumeJobMessage(context, record.body, { receiveCount: receiveCountOf(record), maxReceives }),
    ),
  );

  const batchItemFailures: SQSBatchItemFailure[] = [];
  results.forEach((result, index) => {
    if (result.status === 'rejected') batchItemFailures.push({ itemIdentifier: records[index].messageId });
  });

  return { batchItemFailures };
}

/** Reads `ApproximateReceiveCount`; a missing or unreadable count counts as the first receive. */
export function receiveCountOf(record: SQSRecord): number {
  const count = Number(record.attributes.ApproximateReceiveCount);

  return Number.isSafeInteger(count) && count >= 1 ? count : 1;
}

export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  const { context, config } = awsRuntime();

  return consumeRecords(context, event.Records, config.maxReceives);
}
