import { ECSClient } from '@aws-sdk/client-ecs';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { handleTaskStateChange, type EcsTaskStateChange, type TaskStateChangeEvent } from '../functions/task-stopped.js';
import type { JobStatus } from '../lib/jobs/state.js';
import { setupLogKey } from '../lib/logs/log-store.js';
import type { JobRecord } from '../lib/store/index.js';
import { startFunctionsStack, TRIGGERS_QUEUE_URL, type FunctionsStack } from './support/functions-stack.js';

const sqsMock = mockClient(SQSClient);
const ecsMock = mockClient(ECSClient);
const CLUSTER_ARN = 'arn:aws:ecs:us-east-1:000000000000:cluster/kiln-builds';

function taskArn(id: string): string {
  return `arn:aws:ecs:us-east-1:000000000000:task/kiln-builds/${id}`;
}

function stopEvent(detail: Partial<EcsTaskStateChange> & { taskArn: string }, id = 'event-1'): TaskStateChangeEvent {
  return {
    version: '0',
    id,
    'detail-type': 'ECS Task State Change',
    source: 'aws.ecs',
    account: '000000000000',
    time: '2026-12-04T12:00:00Z',
    region: 'us-east-1',
    resources: [detail.taskArn],
    detail: { clusterArn: CLUSTER_ARN, lastStatus: 'STOPPED', containers: [], ...detail },
  };
}

const OUT_OF_MEMORY = {
  stopCode: 'EssentialContainerExited',
  stoppedReason: 'Essential container in task exited',
  containers: [{ name: 'runner', exitCode: 137, reason: 'OutOfMemoryError: Container killed due to memory usage' }],
};

describe('task stopped function', () => {
  let stack: FunctionsStack;
  let jobCount = 0;

  beforeAll(async () => {
    stack = await startFunctionsStack();
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

  /** Stores a job in `status` whose recorded runner is `runner`. */
  async function jobWithRunner(runner: string, status: JobStatus = 'running', manifest?: string): Promise<JobRecord> {
    jobCount += 1;
    const job = await stack.createJob(`user${jobCount}`, manifest);

    return stack.runtime.context.stores.jobs.transition(job.id, (current) => ({
      ...current,
      status,
      runner,
      dispatchAttempt: 1,
      dispatchedAt: Date.now(),
      claimedAt: status === 'running' ? Date.now() : null,
      tasks: status === 'running' ? [{ name: 'build', status: 'running' }] : current.tasks,
    }));
  }

  function readJob(id: number): Promise<JobRecord> {
    return stack.runtime.context.stores.jobs.get(id);
  }

  function readSetupLog(id: number): Promise<string> {
    return stack.runtime.context.logs.read(setupLogKey(id));
  }

  it('queues the triggers of the job it fails', async () => {
    const manifest = [
      'image: alpine/latest',
      'tasks:',
      '  - build: make',
      'triggers:',
      '  - action: webhook',
      '    condition: failure',
      '    url: https://hooks.example.org/kiln',
      '',
    ].join('\n');
    const job = await jobWithRunner('task-with-triggers', 'running', manifest);
    // Submitting the job sent it to the job queue; only the messages after that count.
    sqsMock.resetHistory();

    await handleTaskStateChange(
      stack.runtime.context,
      stopEvent({ taskArn: taskArn('task-with-triggers'), startedBy: `kiln-job-${job.id}`, ...OUT_OF_MEMORY }),
    );

    expect((await readJob(job.id)).status).toBe('failed');
    expect(sqsMock.commandCalls(SendMessageCommand).map((call) => call.args[0].input)).toEqual([
      { QueueUrl: TRIGGERS_QUEUE_URL, MessageBody: JSON.stringify({ jobId: job.id }), DelaySeconds: 0 },
    ]);
  });

  it('fails the job of a task killed for memory', async () => {
    const job = await jobWithRunner('task-oom');

    const outcome = await handleTaskStateChange(
      stack.runtime.context,
      stopEvent({ taskArn: taskArn('task-oom'), startedBy: `kiln-job-${job.id}`, ...OUT_OF_MEMORY }),
    );
    const stored = await readJob(job.id);
    const log = await readSetupLog(job.id);

    expect(outcome?.changed).toBe(true);
    expect(stored.status).toBe('failed');
    expect(stored.tasks).toEqual([{ name: 'build', status: 'failed' }]);
    expect(stored.failureReason).toContain('The build ran out of memory');
    expect(stored.failureReason).toContain('exit code 137');
    expect(stored.failureReason).toContain('OutOfMemoryError: Container killed due to memory usage');
    expect(log).toBe(`[kiln] ${stored.failureReason}\n`);
  });

  it('changes nothing for a duplicate event', async () => {
    const job = await jobWithRunner('task-dup');
    const event = stopEvent({ taskArn: taskArn('task-dup'), startedBy: `kiln-job-${job.id}`, ...OUT_OF_MEMORY });
    await handleTaskStateChange(stack.runtime.context, event);
    const afterFirst = await readJob(job.id);

    const outcome = await handleTaskStateChange(stack.runtime.context, event);
    const afterSecond = await readJob(job.id);

    expect(outcome?.changed).toBe(false);
    expect(outcome?.detail).toBe('job already ended (failed)');
    expect(afterSecond.version).toBe(afterFirst.version);
    expect(afterSecond.failureReason).toBe(afterFirst.failureReason);
    expect((await readSetupLog(job.id)).split('\n').filter((line) => line !== '')).toHaveLength(1);
  });

  it('ignores a task that is not the recorded runner', async () => {
    const job = await jobWithRunner('task-current');

    const outcome = await handleTaskStateChange(
      stack.runtime.context,
      stopEvent({ taskArn: taskArn('task-earlier'), startedBy: `kiln-job-${job.id}`, ...OUT_OF_MEMORY }),
    );
    const stored = await readJob(job.id);

    expect(outcome?.changed).toBe(false);
    expect(outcome?.detail).toBe("task task-earlier is not the job's runner (task-current)");
    expect(stored.status).toBe('running');
    expect(stored.version).toBe(job.version);
    expect(await readSetupLog(job.id)).toBe('');
  });

  it('fails a queued job whose image could not be pulled', async () => {
    const job = await jobWithRunner('task-pull', 'queued');

    await handleTaskStateChange(
      stack.runtime.context,
      stopEvent({
        taskArn: taskArn('task-pull'),
        startedBy: `kiln-job-${job.id}`,
        stopCode: 'TaskFailedToStart',
        stoppedReason: 'CannotPullContainerError: pull image manifest has been retried 5 time(s): not found',
      }),
    );
    const stored = await readJob(job.id);

    expect(stored.status).toBe('failed');
    expect(stored.tasks).toEqual([{ name: 'build', status: 'skipped' }]);
    expect(stored.failureReason).toBe(
      "The build's container image could not be pulled, so the build never started " +
        '(ECS: CannotPullContainerError: pull image manifest has been retried 5 time(s): not found; stop code TaskFailedToStart)',
    );
    expect(await readSetupLog(job.id)).toContain('CannotPullContainerError');
  });

  it('reports the exit code of a crashed runner', async () => {
    const job = await jobWithRunner('task-exit');

    await handleTaskStateChange(
      stack.runtime.context,
      stopEvent({
        taskArn: taskArn('task-exit'),
        startedBy: `kiln-job-${job.id}`,
        stopCode: 'EssentialContainerExited',
        stoppedReason: 'Essential container in task exited',
        containers: [{ name: 'runner', exitCode: 2 }],
      }),
    );
    const stored = await readJob(job.id);

    expect(stored.failureReason).toBe(
      "The build's container stopped before its runner reported the job's end " +
        '(ECS: Essential container in task exited; exit code 2; stop code EssentialContainerExited)',
    );
  });

  it('names a Spot interruption', async () => {
    const job = await jobWithRunner('task-spot');

    await handleTaskStateChange(
      stack.runtime.context,
      stopEvent({
        taskArn: taskArn('task-spot'),
        startedBy: `kiln-job-${job.id}`,
        stopCode: 'SpotInterruption',
        stoppedReason: 'Your Spot Task was interrupted.',
      }),
    );

    expect((await readJob(job.id)).failureReason).toContain('AWS reclaimed the Fargate Spot capacity');
  });

  it('leaves a job that already succeeded', async () => {
    const job = await jobWithRunner('task-done');
    await stack.runtime.context.stores.jobs.transition(job.id, (current) => ({ ...current, status: 'success' }));

    const outcome = await handleTaskStateChange(
      stack.runtime.context,
      stopEvent({ taskArn: taskArn('task-done'), startedBy: `kiln-job-${job.id}`, containers: [{ name: 'runner', exitCode: 0 }] }),
    );

    expect(outcome?.changed).toBe(false);
    expect((await readJob(job.id)).status).toBe('success');
  });

  it('ignores a task that Kiln did not start', async () => {
    const outcome = await handleTaskStateChange(
      stack.runtime.context,
      stopEvent({ taskArn: taskArn('task-other'), startedBy: 'ecs-svc/123', ...OUT_OF_MEMORY }),
    );

    expect(outcome).toEqual({ jobId: null, changed: false, detail: 'task was not started by Kiln' });
  });

  it('ignores a job that does not exist', async () => {
    const outcome = await handleTaskStateChange(
      stack.runtime.context,
      stopEvent({ taskArn: taskArn('task-none'), startedBy: 'kiln-job-999999', ...OUT_OF_MEMORY }),
    );

    expect(outcome).toEqual({ jobId: 999999, changed: false, detail: 'job not found' });
  });

  it('ignores a task that has not stopped', async () => {
    const job = await jobWithRunner('task-live');

    const outcome = await handleTaskStateChange(
      stack.runtime.context,
      stopEvent({ taskArn: taskArn('task-live'), startedBy: `kiln-job-${job.id}`, lastStatus: 'DEPROVISIONING' }),
    );

    expect(outcome).toBeNull();
    expect((await readJob(job.id)).status).toBe('running');
  });

  it('stops no task while failing the job', async () => {
    const job = await jobWithRunner('task-quiet');

    await handleTaskStateChange(
      stack.runtime.context,
      stopEvent({ taskArn: taskArn('task-quiet'), startedBy: `kiln-job-${job.id}`, ...OUT_OF_MEMORY }),
    );

    expect(ecsMock.calls()).toHaveLength(0);
  });
});
