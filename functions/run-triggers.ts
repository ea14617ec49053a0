/**
 * Lambda entry point of the triggers queue consumer. Each SQS record names
 * one job that ended; its webhooks and emails are sent, and its group's when
 * the group's last job ended. A record whose handling throws is reported in
 * `batchItemFailures`, so SQS delivers it again; triggers already sent are
 * skipped then.
 */
import type { SQSBatchItemFailure, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { awsRuntime } from '../lib/aws-context.js';
import type { ServiceContext } from '../lib/context.js';
import type { TriggerRuntime } from '../lib/triggers/actions.js';
import { createAwsTriggerRuntime, readTriggerMaxReceives } from '../lib/triggers/aws.js';
import { consumeTriggerMessage } from '../lib/triggers/run-triggers.js';
import { receiveCountOf } from './dispatch-job.js';

/** Handles a batch of triggers messages and returns the records that SQS must deliver again. */
export async function consumeTriggerRecords(
  context: ServiceContext,
  runtime: TriggerRuntime,
  records: readonly SQSRecord[],
  maxReceives: number,
): Promise<SQSBatchResponse> {
  const results = await Promise.allSettled(
    records.map((record) =>
      consumeTriggerMessage(context, runtime, record.body, { receiveCount: receiveCountOf(record), maxReceives }),
    ),
  );

  const batchItemFailures: SQSBatchItemFailure[] = [];
  results.forEach((result, index) => {
    if (result.status === 'rejected') batchItemFailures.push({ itemIdentifier: records[index].messageId });
  });

  return { batchItemFailures };
}

let runtime: TriggerRuntime | null = null;

export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  const { context } = awsRuntime();
  runtime ??= createAwsTriggerRuntime(context.settings);

  return consumeTriggerRecords(context, runtime, event.Records, readTriggerMaxReceives(process.env));
}
