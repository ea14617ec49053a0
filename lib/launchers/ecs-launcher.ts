import {
  DescribeTasksCommand,
  InvalidParameterException,
  RunTaskCommand,
  StopTaskCommand,
  type ECSClient,
  type Failure,
  type RunTaskCommandInput,
  type Task,
} from '@aws-sdk/client-ecs';
import { launchClientToken } from '../dispatch/dispatch-job.js';
import type { RunnerInspector } from '../dispatch/reconcile.js';
import { startedByOfJob, taskIdOfArn, type RunnerState, type StoppedTask } from '../dispatch/task-stopped.js';
import type { Logger } from '../logger.js';
import type { Architecture } from '../manifest/images.js';
import { CapacityError, type LaunchRequest, type Launcher } from './launcher.js';

/** Name of the runner's container in every task definition. */
export const RUNNER_CONTAINER_NAME = 'runner';

/** ECS accepts a StopTask reason of up to 255 characters, as the AWS SDK documentation of StopTaskRequest states. */
export const MAX_STOP_REASON_LENGTH = 255;

/** DescribeTasks takes at most 100 tasks per call, as the `tasks` field of @aws-sdk/client-ecs's DescribeTasksRequest states. */
const DESCRIBE_BATCH_SIZE = 100;

/**
 * Names the task definition family of a catalog image on an architecture,
 * such as `Kiln-runner-alpine-3_22-arm64` for `alpine/3.22`. The CDK stack
 * registers the families under these names, and the launcher runs the
 * latest revision of each, so both sides share this function.
 */
export function taskDefinitionFamily(prefix: string, image: string, arch: Architecture): string {
  const slug = image.replaceAll('/', '-').replaceAll('.', '_');

  return `${prefix}-${slug}-${arch}`;
}

/** Builds the key of an image on an architecture in the set of deployed runner images, such as `alpine/edge@arm64`. */
export function runnerImageKey(image: string, arch: Architecture): string {
  return `${image}@${arch}`;
}

export interface EcsLauncherOptions {
  ecs: ECSClient;
  /** Name or ARN of the cluster that runs the builds. */
  cluster: string;
  /** Prefix of the task definition families, see {@link taskDefinitionFamily}. */
  taskFamilyPrefix: string;
  /** Images and architectures with a task definition, as {@link runnerImageKey} keys. */
  deployedImages: ReadonlySet<string>;
  subnets: readonly string[];
  securityGroups: readonly string[];
  /** Whether tasks get a public IP; needed in public subnets, where no NAT gateway routes their traffic. */
  assignPublicIp: boolean;
  /** Whether x86_64 builds run on Fargate Spot. Fargate Spot does not run ARM64 tasks, so arm64 builds use Fargate. */
  useSpot: boolean;
  /** Base URL of the API that runners claim their jobs from. */
  apiUrl: string;
  logger: Logger;
}

/**
 * Runs each build as an ECS Fargate task. RunTask carries a client token per
 * launch attempt, so a retried call starts no second task. The runner gets
 * only the API URL, the job id and its one-time job token.
 */
export class EcsLauncher implements Launcher, RunnerInspector {
  constructor(private readonly options: EcsLauncherOptions) {}

  async launch(request: LaunchRequest): Promise<string> {
    const key = runnerImageKey(request.image, request.arch);
    if (!this.options.deployedImages.has(key)) {
      throw new Error(
        `Image ${request.image} for ${request.arch} is not deployed on this Kiln. ` +
          `Deployed images: ${[...this.options.deployedImages].sort().join(', ')}`,
      );
    }

    const input = this.runTaskInput(request);
    let tasks: Task[];
    let failures: Failure[];
    try {
      ({ tasks = [], failures = [] } = await this.options.ecs.send(new RunTaskCommand(input)));
    } catch (error) {
      throw classifyRunTaskError(request.jobId, error);
    }

    if (failures.length > 0 || tasks.length === 0) throw describeRunTaskFailures(request.jobId, failures);

    const taskId = taskIdOfArn(tasks[0].taskArn ?? '');
    if (taskId === '') throw new Error(`RunTask for job ${request.jobId} returned a task without an ARN`);

    return taskId;
  }

  /** Builds the RunTask request of one launch attempt. */
  runTaskInput(request: LaunchRequest): RunTaskCommandInput {
    const { options } = this;
    const capacityProvider = options.useSpot && request.arch === 'x86_64' ? 'FARGATE_SPOT' : 'FARGATE';

    return {
      cluster: options.cluster,
      taskDefinition: taskDefinitionFamily(options.taskFamilyPrefix, request.image, request.arch),
      count: 1,
      clientToken: launchClientToken(request.jobId, request.attempt),
      startedBy: startedByOfJob(request.jobId),
      capacityProviderStrategy: [{ capacityProvider, weight: 1 }],
      networkConfiguration: {
        awsvpcConfiguration: {
          subnets: [...options.subnets],
          securityGroups: [...options.securityGroups],
          assignPublicIp: options.assignPublicIp ? 'ENABLED' : 'DISABLED',
        },
      },
      overrides: {
        containerOverrides: [
          {
            name: RUNNER_CONTAINER_NAME,
            environment: [
              { name: 'KILN_API_URL', value: options.apiUrl },
              { name: 'KILN_JOB_ID', value: String(request.jobId) },
              // NOTE: container overrides are readable through DescribeTasks by
              // anyone with that permission in the account. The token is worth
              // nothing once the runner has claimed the job.
              { name: 'KILN_JOB_TOKEN', value: request.jobToken },
            ],
          },
        ],
      },
      enableExecuteCommand: false,
      propagateTags: 'TASK_DEFINITION',
      tags: [{ key: 'kiln:job-id', value: String(request.jobId) }],
    };
  }

  async stop(jobId: number, runner: string, reason: string): Promise<void> {
    try {
      await this.options.ecs.send(
        new StopTaskCommand({ cluster: this.options.cluster, task: runner, reason: truncate(reason, MAX_STOP_REASON_LENGTH) }),
      );
      this.options.logger.info({ jobId, runner }, 'stopped runner task');
    } catch (error) {
      if (error instanceof InvalidParameterException && /not found/i.test(error.message)) {
        this.options.logger.info({ jobId, runner }, 'runner task to stop was already gone');
        return;
      }
      throw new Error(`failed to stop task ${runner} of job ${jobId}`, { cause: error });
    }
  }

  /** Looks up the state of each task. Tasks that ECS no longer lists, at least an hour after they stop, are `missing`. */
  async describeRunners(taskIds: readonly string[]): Promise<Map<string, RunnerState>> {
    const states = new Map<string, RunnerState>();
    for (let start = 0; start < taskIds.length; start += DESCRIBE_BATCH_SIZE) {
      const batch = taskIds.slice(start, start + DESCRIBE_BATCH_SIZE);
      let result;
      try {
        result = await this.options.ecs.send(new DescribeTasksCommand({ cluster: this.options.cluster, tasks: [...batch] }));
      } catch (error) {
        throw new Error(`failed to describe ${batch.length} runner tasks`, { cause: error });
      }

      for (const task of result.tasks ?? []) {
        const taskId = taskIdOfArn(task.taskArn ?? '');
        if (taskId === '') continue;
        states.set(taskId, task.lastStatus === 'STOPPED' ? { state: 'stopped', task: toStoppedTask(task) } : { state: 'active' });
      }
      for (const failure of result.failures ?? []) {
        const taskId = taskIdOfArn(failure.arn ?? '');
        if (taskId !== '' && failure.reason === 'MISSING') states.set(taskId, { state: 'missing' });
      }
    }

    return states;
  }
}

/** Converts an ECS task into the fields that explain why it stopped. */
export function toStoppedTask(task: Task): StoppedTask {
  return {
    taskArn: task.taskArn ?? '',
    startedBy: task.startedBy,
    stopCode: task.stopCode,
    stoppedReason: task.stoppedReason,
    containers: (task.containers ?? []).map((container) => ({
      name: container.name ?? '',
      exitCode: container.exitCode,
      reason: container.reason,
    })),
  };
}

/** Failure reasons of RunTask that mean capacity, a quota or throttling, and pass with time. */
const CAPACITY_FAILURE = /^RESOURCE:|^AGENT$|capacity is unavailable|throttl|rate exceeded|limit|quota/i;

/** Error names of the ECS API that mean capacity, a quota, throttling or a server-side fault. */
const TRANSIENT_ERROR_NAMES = new Set([
  'LimitExceededException',
  'ThrottlingException',
  'TooManyRequestsException',
  'ServerException',
  'ServiceUnavailableException',
  'TimeoutError',
]);

/** ClientException messages that name a quota, such as the vCPU limit of Fargate On-Demand. */
const QUOTA_MESSAGE = /reached the limit|limit exceeded|quota|capacity|throttl|rate exceeded/i;

function describeRunTaskFailures(jobId: number, failures: readonly Failure[]): Error {
  if (failures.length === 0) return new Error(`RunTask for job ${jobId} started no task and returned no failure`);

  const detail = failures.map((failure) => [failure.reason, failure.detail].filter(Boolean).join(': ')).join('; ');
  const message = `RunTask for job ${jobId} failed: ${detail}`;
  if (failures.every((failure) => CAPACITY_FAILURE.test(failure.reason ?? ''))) return new CapacityError(message);

  return new Error(message);
}

/**
 * Maps an error thrown by RunTask to a CapacityError when waiting may fix it
 * (capacity, quotas, throttling, server faults) and to a permanent error otherwise.
 */
function classifyRunTaskError(jobId: number, error: unknown): Error {
  const name = error instanceof Error ? error.name : '';
  const message = error instanceof Error ? error.message : String(error);
  const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? 0;
  const transient =
    TRANSIENT_ERROR_NAMES.has(name) ||
    status === 429 ||
    status >= 500 ||
    (name === 'ClientException' && QUOTA_MESSAGE.test(message));
  const text = `RunTask for job ${jobId} failed: ${name}: ${message}`;

  return transient ? new CapacityError(text, { cause: error }) : new Error(text, { cause: error });
}

function truncate(text: string, length: number): string {
  return text.length <= length ? text : `${text.slice(0, length - 1)}…`;
}
