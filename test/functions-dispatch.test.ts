import { AccessDeniedException, ECSClient, RunTaskCommand } from '@aws-sdk/client-ecs';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { consumeRecords, receiveCountOf } from '../functions/dispatch-job.js';
import { hashToken } from '../lib/auth/tokens.js';
import { CAPACITY_RETRY_SECONDS, launchClientToken, SLOT_WAIT_SECONDS } from '../lib/dispatch/dispatch-job.js';
import { QUEUE_URL, sqsRecord, startFunctionsStack, type FunctionsStack } from './support/functions-stack.js';

const sqsMock = mockClient(SQSClient);
const ecsMock = mockClient(ECSClient);
const MAX_RECEIVES = 5;

function taskArn(id: string): string {
  return `arn:aws:ecs:us-east-1:000000000000:task/kiln-builds/${id}`;
}

function message(jobId: number): string {
  return JSON.stringify({ jobId });
}

describe('dispatch function', () => {
  let stack: FunctionsStack;

  beforeAll(async () => {
    stack = await startFunctionsStack({ KILN_MAX_RUNNING_PER_USER: '1' });
  });

  afterAll(async () => {
    await stack.close();
    sqsMock.restore();
    ecsMock.restore();
  });

  beforeEach(() => {
    sqsMock.reset();
    ecsMock.reset();
    sqsMock.on(SendMessageCommand).resolves({ MessageId: 'sent' });
  });

  /** Creates a job of `user` and launches it as task `taskId`, so the user's one running slot is taken. */
  async function runningJobOf(user: string, taskId: string): Promise<number> {
    const job = await stack.createJob(user);
    ecsMock.on(RunTaskCommand).resolvesOnce({ tasks: [{ taskArn: taskArn(taskId) }] });
    await consumeRecords(stack.runtime.context, [sqsRecord(`first-${user}`, message(job.id), 1)], MAX_RECEIVES);
    sqsMock.resetHistory();
    ecsMock.resetHistory();

    return job.id;
  }

  it('launches a queued job', async () => {
    const job = await stack.createJob('alice');
    sqsMock.resetHistory();
    ecsMock.on(RunTaskCommand).resolves({ tasks: [{ taskArn: taskArn('task-alice') }], failures: [] });

    const response = await consumeRecords(stack.runtime.context, [sqsRecord('m1', message(job.id), 1)], MAX_RECEIVES);
    const stored = await stack.runtime.context.stores.jobs.get(job.id);
    const input = ecsMock.commandCalls(RunTaskCommand)[0].args[0].input;
    const environment = input.overrides?.containerOverrides?.[0].environment ?? [];
    const jobToken = environment.find((variable) => variable.name === 'KILN_JOB_TOKEN')?.value ?? '';

    expect(response).toEqual({ batchItemFailures: [] });
    expect(stored.status).toBe('queued');
    expect(stored.runner).toBe('task-alice');
    expect(stored.dispatchAttempt).toBe(1);
    expect(stored.holdsSlot).toBe(true);
    expect(input.taskDefinition).toBe('Kiln-runner-alpine-latest-x86_64');
    expect(input.startedBy).toBe(`kiln-job-${job.id}`);
    expect(input.clientToken).toBe(launchClientToken(job.id, 1));
    expect(environment.slice(0, 2)).toEqual([
      { name: 'KILN_API_URL', value: 'https://kiln.example.org' },
      { name: 'KILN_JOB_ID', value: String(job.id) },
    ]);
    expect(jobToken.startsWith(`kilnjob_${job.id}_`)).toBe(true);
    expect(hashToken(jobToken)).toBe(stored.jobTokenHash);
    expect(sqsMock.commandCalls(SendMessageCommand)).toHaveLength(0);
  });

  it('ignores a duplicate delivery', async () => {
    const jobId = await runningJobOf('amy', 'task-amy');

    const response = await consumeRecords(stack.runtime.context, [sqsRecord('dup', message(jobId), 2)], MAX_RECEIVES);

    expect(response).toEqual({ batchItemFailures: [] });
    expect(ecsMock.commandCalls(RunTaskCommand)).toHaveLength(0);
    expect((await stack.runtime.context.stores.jobs.get(jobId)).dispatchAttempt).toBe(1);
  });

  it('sends a job over the limit again', async () => {
    await runningJobOf('bob', 'task-bob');
    const waiting = await stack.createJob('bob');
    sqsMock.resetHistory();

    const response = await consumeRecords(stack.runtime.context, [sqsRecord('m2', message(waiting.id), 1)], MAX_RECEIVES);
    const stored = await stack.runtime.context.stores.jobs.get(waiting.id);

    expect(response).toEqual({ batchItemFailures: [] });
    expect(ecsMock.commandCalls(RunTaskCommand)).toHaveLength(0);
    expect(sqsMock.commandCalls(SendMessageCommand)).toHaveLength(1);
    expect(sqsMock.commandCalls(SendMessageCommand)[0].args[0].input).toEqual({
      QueueUrl: QUEUE_URL,
      MessageBody: message(waiting.id),
      DelaySeconds: SLOT_WAIT_SECONDS,
    });
    expect(stored.status).toBe('queued');
    expect(stored.dispatchedAt).toBeNull();
  });

  it('sends a job again after a capacity error', async () => {
    const job = await stack.createJob('carol');
    sqsMock.resetHistory();
    ecsMock.on(RunTaskCommand).resolves({ tasks: [], failures: [{ reason: 'RESOURCE:MEMORY' }] });

    const response = await consumeRecords(stack.runtime.context, [sqsRecord('m3', message(job.id), 1)], MAX_RECEIVES);
    const stored = await stack.runtime.context.stores.jobs.get(job.id);

    expect(response).toEqual({ batchItemFailures: [] });
    expect(sqsMock.commandCalls(SendMessageCommand)[0].args[0].input).toEqual({
      QueueUrl: QUEUE_URL,
      MessageBody: message(job.id),
      DelaySeconds: CAPACITY_RETRY_SECONDS,
    });
    expect(stored.status).toBe('queued');
    expect(stored.dispatchedAt).toBeNull();
    expect(stored.runner).toBeNull();
    expect(stored.holdsSlot).toBe(false);
    expect(stored.dispatchAttempt).toBe(1);
  });

  it('reports only the failed record of a batch', async () => {
    await runningJobOf('dave', 'task-dave');
    const waiting = await stack.createJob('dave');
    const other = await stack.createJob('erin');
    sqsMock.reset();
    sqsMock.on(SendMessageCommand).rejects(new Error('SQS is unavailable'));
    ecsMock.on(RunTaskCommand).resolves({ tasks: [{ taskArn: taskArn('task-erin') }] });

    const response = await consumeRecords(
      stack.runtime.context,
      [sqsRecord('waits', message(waiting.id), 1), sqsRecord('launches', message(other.id), 1)],
      MAX_RECEIVES,
    );

    expect(response).toEqual({ batchItemFailures: [{ itemIdentifier: 'waits' }] });
    expect((await stack.runtime.context.stores.jobs.get(waiting.id)).status).toBe('queued');
    expect((await stack.runtime.context.stores.jobs.get(other.id)).runner).toBe('task-erin');
  });

  it('fails the job on the last receive', async () => {
    await runningJobOf('fay', 'task-fay');
    const waiting = await stack.createJob('fay');
    sqsMock.reset();
    sqsMock.on(SendMessageCommand).rejects(new Error('SQS is unavailable'));

    const response = await consumeRecords(
      stack.runtime.context,
      [sqsRecord('last', message(waiting.id), MAX_RECEIVES)],
      MAX_RECEIVES,
    );
    const stored = await stack.runtime.context.stores.jobs.get(waiting.id);

    expect(response).toEqual({ batchItemFailures: [] });
    expect(stored.status).toBe('failed');
    expect(stored.failureReason).toContain(`Failed to dispatch the job after ${MAX_RECEIVES} attempts`);
    expect(stored.failureReason).toContain(`failed to queue job ${waiting.id}`);
  });

  it('fails the job on a permanent launch error', async () => {
    const job = await stack.createJob('gus');
    ecsMock.on(RunTaskCommand).rejects(new AccessDeniedException({ message: 'not allowed', $metadata: { httpStatusCode: 400 } }));

    const response = await consumeRecords(stack.runtime.context, [sqsRecord('m4', message(job.id), 1)], MAX_RECEIVES);
    const stored = await stack.runtime.context.stores.jobs.get(job.id);

    expect(response).toEqual({ batchItemFailures: [] });
    expect(stored.status).toBe('failed');
    expect(stored.failureReason).toBe(
      `Failed to start the build's runner: RunTask for job ${job.id} failed: AccessDeniedException: not allowed`,
    );
    expect(stored.holdsSlot).toBe(false);
  });

  it('drops a body that is not a job message', async () => {
    const response = await consumeRecords(stack.runtime.context, [sqsRecord('junk', 'hello', 1)], MAX_RECEIVES);

    expect(response).toEqual({ batchItemFailures: [] });
    expect(ecsMock.calls()).toHaveLength(0);
    expect(sqsMock.calls()).toHaveLength(0);
  });
});

describe('receiveCountOf', () => {
  it('reads the approximate receive count', () => {
    expect(receiveCountOf(sqsRecord('a', '{}', 3))).toBe(3);
  });

  it('treats an unreadable count as the first', () => {
    const record = sqsRecord('a', '{}', 1);
    record.attributes.ApproximateReceiveCount = 'x';

    expect(receiveCountOf(record)).toBe(1);
  });
});
