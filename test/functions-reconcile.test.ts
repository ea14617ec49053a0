import { DescribeTasksCommand, ECSClient, StopTaskCommand, type DescribeTasksCommandInput } from '@aws-sdk/client-ecs';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { reconcileAll } from '../functions/reconcile.js';
import { failJobsOfLostRunners, LOST_MESSAGE_AFTER_MS, requeueLostJobs, RUNNER_LOOKUP_GRACE_MS } from '../lib/dispatch/reconcile.js';
import type { JobStatus } from '../lib/jobs/state.js';
import { setupLogKey } from '../lib/logs/log-store.js';
import type { JobRecord } from '../lib/store/index.js';
import { QUEUE_URL, startFunctionsStack, type FunctionsStack } from './support/functions-stack.js';

const sqsMock = mockClient(SQSClient);
const ecsMock = mockClient(ECSClient);

/** ECS's view of each task id that a test sets up; ids not listed are unknown to ECS. */
const ecsTasks = new Map<string, 'RUNNING' | 'STOPPED'>();

function describeTasks(input: DescribeTasksCommandInput) {
  const tasks = [];
  const failures = [];
  for (const id of input.tasks ?? []) {
    const status = ecsTasks.get(id);
    const arn = `arn:aws:ecs:us-east-1:000000000000:task/kiln-builds/${id}`;
    if (status === undefined) {
      failures.push({ arn, reason: 'MISSING' });
    } else if (status === 'RUNNING') {
      tasks.push({ taskArn: arn, lastStatus: status });
    } else {
      tasks.push({
        taskArn: arn,
        lastStatus: status,
        stopCode: 'EssentialContainerExited',
        stoppedReason: 'Essential container in task exited',
        containers: [{ name: 'runner', exitCode: 1 }],
      });
    }
  }

  return { tasks, failures };
}

describe('reconcile function', () => {
  let stack: FunctionsStack;
  let userCount = 0;

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
    ecsTasks.clear();
    sqsMock.on(SendMessageCommand).resolves({ MessageId: 'sent' });
    ecsMock.on(DescribeTasksCommand).callsFake(describeTasks);
    ecsMock.on(StopTaskCommand).resolves({});
  });

  function nextUser(): string {
    userCount += 1;
    return `user${userCount}`;
  }

  async function jobOf(user: string, change: (job: JobRecord) => JobRecord = (job) => job): Promise<JobRecord> {
    const job = await stack.createJob(user);

    return stack.runtime.context.stores.jobs.transition(job.id, (current) => change(current));
  }

  function withRunner(runner: string, status: JobStatus, dispatchedAt = Date.now()) {
    return (job: JobRecord): JobRecord => ({
      ...job,
      status,
      runner,
      holdsSlot: true,
      dispatchAttempt: 1,
      dispatchedAt,
      claimedAt: status === 'running' ? dispatchedAt : null,
      deadline: status === 'running' ? dispatchedAt + stack.runtime.config.settings.jobTimeoutMs : null,
    });
  }

  function sentJobIds(): number[] {
    return sqsMock.commandCalls(SendMessageCommand).map((call) => JSON.parse(call.args[0].input.MessageBody ?? '{}').jobId);
  }

  describe('requeueLostJobs', () => {
    it('sends a long-queued job again', async () => {
      const job = await jobOf(nextUser());
      sqsMock.resetHistory();

      const requeued = await requeueLostJobs(stack.runtime.context, job.updatedAt + LOST_MESSAGE_AFTER_MS + 1);
      const call = sqsMock.commandCalls(SendMessageCommand).find((sent) => sent.args[0].input.MessageBody === `{"jobId":${job.id}}`);

      expect(requeued).toContain(job.id);
      expect(call?.args[0].input).toEqual({ QueueUrl: QUEUE_URL, MessageBody: `{"jobId":${job.id}}`, DelaySeconds: 0 });
    });

    it('leaves a recently queued job', async () => {
      const job = await jobOf(nextUser());
      sqsMock.resetHistory();

      const requeued = await requeueLostJobs(stack.runtime.context, job.updatedAt + LOST_MESSAGE_AFTER_MS - 1000);

      expect(requeued).not.toContain(job.id);
      expect(sentJobIds()).not.toContain(job.id);
    });

    it('leaves a job whose owner is at the limit', async () => {
      const user = nextUser();
      await jobOf(user, withRunner('task-busy', 'running'));
      const waiting = await jobOf(user);
      sqsMock.resetHistory();

      const requeued = await requeueLostJobs(stack.runtime.context, waiting.updatedAt + LOST_MESSAGE_AFTER_MS + 1);

      expect(requeued).not.toContain(waiting.id);
      expect(sentJobIds()).not.toContain(waiting.id);
    });

    it('leaves a dispatched job', async () => {
      const job = await jobOf(nextUser(), withRunner('task-starting', 'queued'));
      sqsMock.resetHistory();

      const requeued = await requeueLostJobs(stack.runtime.context, job.updatedAt + LOST_MESSAGE_AFTER_MS + 1);

      expect(requeued).not.toContain(job.id);
    });
  });

  describe('failJobsOfLostRunners', () => {
    it('fails a running job whose task is missing', async () => {
      const job = await jobOf(nextUser(), withRunner('task-missing', 'running'));

      const failed = await failJobsOfLostRunners(stack.runtime.context, stack.runtime.launcher, Date.now() + RUNNER_LOOKUP_GRACE_MS + 1);
      const stored = await stack.runtime.context.stores.jobs.get(job.id);

      expect(failed).toContain(job.id);
      expect(stored.status).toBe('failed');
      expect(stored.failureReason).toBe(
        "The build's container is gone: ECS no longer knows its task task-missing, and the runner never reported the job's end",
      );
      expect(await stack.runtime.context.logs.read(setupLogKey(job.id))).toBe(`[kiln] ${stored.failureReason}\n`);
    });

    it('fails a job whose task stopped', async () => {
      const job = await jobOf(nextUser(), withRunner('task-stopped', 'running'));
      ecsTasks.set('task-stopped', 'STOPPED');

      await failJobsOfLostRunners(stack.runtime.context, stack.runtime.launcher, Date.now() + RUNNER_LOOKUP_GRACE_MS + 1);
      const stored = await stack.runtime.context.stores.jobs.get(job.id);

      expect(stored.status).toBe('failed');
      expect(stored.failureReason).toContain('exit code 1');
    });

    it('leaves a job whose task runs', async () => {
      const job = await jobOf(nextUser(), withRunner('task-running', 'running'));
      ecsTasks.set('task-running', 'RUNNING');

      const failed = await failJobsOfLostRunners(stack.runtime.context, stack.runtime.launcher, Date.now() + RUNNER_LOOKUP_GRACE_MS + 1);

      expect(failed).not.toContain(job.id);
      expect((await stack.runtime.context.stores.jobs.get(job.id)).status).toBe('running');
    });

    it('waits before asking about a new task', async () => {
      const job = await jobOf(nextUser(), withRunner('task-new', 'queued'));

      const failed = await failJobsOfLostRunners(stack.runtime.context, stack.runtime.launcher, job.dispatchedAt! + 1000);
      const describedTaskIds = ecsMock.commandCalls(DescribeTasksCommand).flatMap((call) => call.args[0].input.tasks ?? []);

      expect(failed).not.toContain(job.id);
      expect(describedTaskIds).not.toContain('task-new');
      expect((await stack.runtime.context.stores.jobs.get(job.id)).status).toBe('queued');
    });
  });

  describe('reconcileAll', () => {
    it('times out an overdue job and stops its task', async () => {
      const startedAt = Date.now() - 2 * stack.runtime.config.settings.jobTimeoutMs;
      const job = await jobOf(nextUser(), withRunner('task-overdue', 'running', startedAt));
      ecsTasks.set('task-overdue', 'RUNNING');

      const summary = await reconcileAll(stack.runtime.context, stack.runtime.launcher);
      const stop = ecsMock.commandCalls(StopTaskCommand).find((call) => call.args[0].input.task === 'task-overdue');

      expect(summary.ended).toContain(job.id);
      expect((await stack.runtime.context.stores.jobs.get(job.id)).status).toBe('timeout');
      expect(stop?.args[0].input.cluster).toBe('kiln-builds');
      expect(stop?.args[0].input.reason).toContain('Job timed out');
    });

    it('runs every step when one fails', async () => {
      const job = await jobOf(nextUser());
      await jobOf(nextUser(), withRunner('task-unknown', 'running'));
      ecsMock.on(DescribeTasksCommand).rejects(new Error('ECS is unavailable'));
      sqsMock.resetHistory();
      const now = Date.now() + LOST_MESSAGE_AFTER_MS + 1000;

      await expect(reconcileAll(stack.runtime.context, stack.runtime.launcher, now)).rejects.toThrow(
        '1 of 3 reconcile steps failed',
      );
      expect(sentJobIds()).toContain(job.id);
    });
  });
});
