import {
  AccessDeniedException,
  ClientException,
  DescribeTasksCommand,
  ECSClient,
  InvalidParameterException,
  LimitExceededException,
  RunTaskCommand,
  ServerException,
  StopTaskCommand,
} from '@aws-sdk/client-ecs';
import { mockClient } from 'aws-sdk-client-mock';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { launchClientToken } from '../lib/dispatch/dispatch-job.js';
import {
  EcsLauncher,
  MAX_STOP_REASON_LENGTH,
  RUNNER_CONTAINER_NAME,
  runnerImageKey,
  taskDefinitionFamily,
  type EcsLauncherOptions,
} from '../lib/launchers/ecs-launcher.js';
import { CapacityError, type LaunchRequest } from '../lib/launchers/launcher.js';

const CLUSTER = 'arn:aws:ecs:eu-west-1:123456789012:cluster/kiln-builds';
const TASK_ARN = 'arn:aws:ecs:eu-west-1:123456789012:task/kiln-builds/0123456789abcdef0123456789abcdef';

const ecsMock = mockClient(ECSClient);

function createLauncher(overrides: Partial<EcsLauncherOptions> = {}): EcsLauncher {
  return new EcsLauncher({
    ecs: new ECSClient({ region: 'eu-west-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } }),
    cluster: CLUSTER,
    taskFamilyPrefix: 'Kiln-runner',
    deployedImages: new Set([runnerImageKey('alpine/edge', 'x86_64'), runnerImageKey('alpine/edge', 'arm64')]),
    subnets: ['subnet-a', 'subnet-b'],
    securityGroups: ['sg-1'],
    assignPublicIp: true,
    useSpot: false,
    apiUrl: 'https://api.example.org',
    logger: pino({ level: 'silent' }),
    ...overrides,
  });
}

const REQUEST: LaunchRequest = { jobId: 42, jobToken: 'kilnjob_42_secret', attempt: 3, image: 'alpine/edge', arch: 'x86_64' };

function throttling(): Error {
  return Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: { httpStatusCode: 400 } });
}

async function launchError(launcher: EcsLauncher, request: LaunchRequest = REQUEST): Promise<Error> {
  try {
    await launcher.launch(request);
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected launch to fail');
}

beforeEach(() => {
  ecsMock.reset();
});

afterEach(() => {
  ecsMock.reset();
});

describe('taskDefinitionFamily', () => {
  it('replaces slashes and dots', () => {
    expect(taskDefinitionFamily('Kiln-runner', 'alpine/3.22', 'arm64')).toBe('Kiln-runner-alpine-3_22-arm64');
  });

  it('keeps names without separators', () => {
    expect(taskDefinitionFamily('p', 'archlinux', 'x86_64')).toBe('p-archlinux-x86_64');
  });
});

describe('EcsLauncher.launch', () => {
  it('sends the exact RunTask request', async () => {
    ecsMock.on(RunTaskCommand).resolves({ tasks: [{ taskArn: TASK_ARN }], failures: [] });

    const taskId = await createLauncher().launch(REQUEST);

    expect(taskId).toBe('0123456789abcdef0123456789abcdef');
    expect(ecsMock.commandCalls(RunTaskCommand)).toHaveLength(1);
    expect(ecsMock.commandCalls(RunTaskCommand)[0].args[0].input).toEqual({
      cluster: CLUSTER,
      taskDefinition: 'Kiln-runner-alpine-edge-x86_64',
      count: 1,
      clientToken: launchClientToken(42, 3),
      startedBy: 'kiln-job-42',
      capacityProviderStrategy: [{ capacityProvider: 'FARGATE', weight: 1 }],
      networkConfiguration: {
        awsvpcConfiguration: { subnets: ['subnet-a', 'subnet-b'], securityGroups: ['sg-1'], assignPublicIp: 'ENABLED' },
      },
      overrides: {
        containerOverrides: [
          {
            name: RUNNER_CONTAINER_NAME,
            environment: [
              { name: 'KILN_API_URL', value: 'https://api.example.org' },
              { name: 'KILN_JOB_ID', value: '42' },
              { name: 'KILN_JOB_TOKEN', value: 'kilnjob_42_secret' },
            ],
          },
        ],
      },
      enableExecuteCommand: false,
      propagateTags: 'TASK_DEFINITION',
      tags: [{ key: 'kiln:job-id', value: '42' }],
    });
  });

  it('uses the same client token for a repeated attempt', async () => {
    ecsMock.on(RunTaskCommand).resolves({ tasks: [{ taskArn: TASK_ARN }] });
    const launcher = createLauncher();

    await launcher.launch(REQUEST);
    await launcher.launch(REQUEST);
    await launcher.launch({ ...REQUEST, attempt: 4 });
    const tokens = ecsMock.commandCalls(RunTaskCommand).map((call) => call.args[0].input.clientToken);

    expect(tokens[0]).toBe(tokens[1]);
    expect(tokens[2]).not.toBe(tokens[0]);
    expect(tokens[0]).toHaveLength(64);
  });

  it('uses Fargate Spot for x86_64 when opted in', async () => {
    ecsMock.on(RunTaskCommand).resolves({ tasks: [{ taskArn: TASK_ARN }] });

    await createLauncher({ useSpot: true }).launch(REQUEST);

    expect(ecsMock.commandCalls(RunTaskCommand)[0].args[0].input.capacityProviderStrategy).toEqual([
      { capacityProvider: 'FARGATE_SPOT', weight: 1 },
    ]);
  });

  it('uses Fargate for arm64 even when Spot is opted in', async () => {
    ecsMock.on(RunTaskCommand).resolves({ tasks: [{ taskArn: TASK_ARN }] });

    await createLauncher({ useSpot: true }).launch({ ...REQUEST, arch: 'arm64' });
    const input = ecsMock.commandCalls(RunTaskCommand)[0].args[0].input;

    expect(input.capacityProviderStrategy).toEqual([{ capacityProvider: 'FARGATE', weight: 1 }]);
    expect(input.taskDefinition).toBe('Kiln-runner-alpine-edge-arm64');
  });

  it('disables public IPs when asked', async () => {
    ecsMock.on(RunTaskCommand).resolves({ tasks: [{ taskArn: TASK_ARN }] });

    await createLauncher({ assignPublicIp: false }).launch(REQUEST);

    expect(ecsMock.commandCalls(RunTaskCommand)[0].args[0].input.networkConfiguration?.awsvpcConfiguration?.assignPublicIp).toBe(
      'DISABLED',
    );
  });

  it('rejects an image that is not deployed', async () => {
    const error = await launchError(createLauncher(), { ...REQUEST, image: 'debian/sid' });

    expect(error).not.toBeInstanceOf(CapacityError);
    expect(error.message).toContain('Image debian/sid for x86_64 is not deployed');
    expect(error.message).toContain('alpine/edge@arm64');
    expect(ecsMock.commandCalls(RunTaskCommand)).toHaveLength(0);
  });

  it.each([
    ['RESOURCE:MEMORY', undefined],
    ['RESOURCE:ENI', undefined],
    ['AGENT', undefined],
    ['Capacity is unavailable at this time. Please try again later or in a different availability zone', undefined],
  ])('raises CapacityError for failure %s', async (reason, detail) => {
    ecsMock.on(RunTaskCommand).resolves({ tasks: [], failures: [{ arn: 'x', reason, detail }] });

    const error = await launchError(createLauncher());

    expect(error).toBeInstanceOf(CapacityError);
    expect(error.message).toContain(reason);
  });

  it.each(['MISSING', 'ATTRIBUTE', 'LOCATION'])('raises a permanent error for failure %s', async (reason) => {
    ecsMock.on(RunTaskCommand).resolves({ tasks: [], failures: [{ reason, detail: 'because' }] });

    const error = await launchError(createLauncher());

    expect(error).not.toBeInstanceOf(CapacityError);
    expect(error.message).toBe(`RunTask for job 42 failed: ${reason}: because`);
  });

  it('raises a permanent error when only some failures are capacity', async () => {
    ecsMock.on(RunTaskCommand).resolves({ tasks: [], failures: [{ reason: 'RESOURCE:CPU' }, { reason: 'MISSING' }] });

    expect(await launchError(createLauncher())).not.toBeInstanceOf(CapacityError);
  });

  it('raises a permanent error for a reply without tasks', async () => {
    ecsMock.on(RunTaskCommand).resolves({ tasks: [], failures: [] });

    const error = await launchError(createLauncher());

    expect(error).not.toBeInstanceOf(CapacityError);
    expect(error.message).toContain('started no task');
  });

  it.each([
    ['ThrottlingException', throttling()],
    ['LimitExceededException', new LimitExceededException({ message: 'limit', $metadata: {} })],
    ['ServerException', new ServerException({ message: 'internal', $metadata: { httpStatusCode: 500 } })],
    [
      'a ClientException about the vCPU quota',
      new ClientException({
        message: "You've reached the limit on the number of vCPUs you can run concurrently",
        $metadata: { httpStatusCode: 400 },
      }),
    ],
  ] as Array<[string, Error]>)('raises CapacityError for %s', async (_name, thrown) => {
    ecsMock.on(RunTaskCommand).rejects(thrown);

    const error = await launchError(createLauncher());

    expect(error).toBeInstanceOf(CapacityError);
    expect(error.cause).toBe(thrown);
  });

  it.each([
    ['AccessDeniedException', new AccessDeniedException({ message: 'not allowed', $metadata: { httpStatusCode: 400 } })],
    [
      'a ClientException about the task definition',
      new ClientException({ message: 'TaskDefinition not found.', $metadata: { httpStatusCode: 400 } }),
    ],
    [
      'InvalidParameterException',
      new InvalidParameterException({ message: 'bad subnet', $metadata: { httpStatusCode: 400 } }),
    ],
  ] as Array<[string, Error]>)('raises a permanent error for %s', async (_name, thrown) => {
    ecsMock.on(RunTaskCommand).rejects(thrown);

    const error = await launchError(createLauncher());

    expect(error).not.toBeInstanceOf(CapacityError);
    expect(error.message).toContain(thrown.message);
    expect(error.cause).toBe(thrown);
  });
});

describe('EcsLauncher.stop', () => {
  it('sends StopTask with the reason', async () => {
    ecsMock.on(StopTaskCommand).resolves({});

    await createLauncher().stop(42, 'task-1', 'Job cancelled');

    expect(ecsMock.commandCalls(StopTaskCommand)[0].args[0].input).toEqual({
      cluster: CLUSTER,
      task: 'task-1',
      reason: 'Job cancelled',
    });
  });

  it('truncates a long reason to the ECS limit', async () => {
    ecsMock.on(StopTaskCommand).resolves({});

    await createLauncher().stop(42, 'task-1', 'x'.repeat(1000));
    const reason = ecsMock.commandCalls(StopTaskCommand)[0].args[0].input.reason ?? '';

    expect(reason).toHaveLength(MAX_STOP_REASON_LENGTH);
    expect(reason.endsWith('…')).toBe(true);
  });

  it('accepts a task that is already gone', async () => {
    ecsMock.on(StopTaskCommand).rejects(
      new InvalidParameterException({ message: 'The referenced task was not found.', $metadata: { httpStatusCode: 400 } }),
    );

    await expect(createLauncher().stop(42, 'task-1', 'Job cancelled')).resolves.toBeUndefined();
  });

  it('raises other errors with the task id', async () => {
    const thrown = new AccessDeniedException({ message: 'not allowed', $metadata: { httpStatusCode: 400 } });
    ecsMock.on(StopTaskCommand).rejects(thrown);

    await expect(createLauncher().stop(42, 'task-1', 'Job cancelled')).rejects.toThrow('failed to stop task task-1 of job 42');
  });
});

describe('EcsLauncher.describeRunners', () => {
  it('reports active, stopped and missing tasks', async () => {
    ecsMock.on(DescribeTasksCommand).resolves({
      tasks: [
        { taskArn: 'arn:aws:ecs:r:1:task/c/running1', lastStatus: 'RUNNING' },
        {
          taskArn: 'arn:aws:ecs:r:1:task/c/stopped1',
          lastStatus: 'STOPPED',
          startedBy: 'kiln-job-7',
          stopCode: 'EssentialContainerExited',
          stoppedReason: 'Essential container in task exited',
          containers: [{ name: 'runner', exitCode: 137, reason: 'OutOfMemoryError: Container killed due to memory usage' }],
        },
      ],
      failures: [{ arn: 'arn:aws:ecs:r:1:task/c/gone1', reason: 'MISSING' }],
    });

    const states = await createLauncher().describeRunners(['running1', 'stopped1', 'gone1']);

    expect(states.get('running1')).toEqual({ state: 'active' });
    expect(states.get('gone1')).toEqual({ state: 'missing' });
    expect(states.get('stopped1')).toEqual({
      state: 'stopped',
      task: {
        taskArn: 'arn:aws:ecs:r:1:task/c/stopped1',
        startedBy: 'kiln-job-7',
        stopCode: 'EssentialContainerExited',
        stoppedReason: 'Essential container in task exited',
        containers: [{ name: 'runner', exitCode: 137, reason: 'OutOfMemoryError: Container killed due to memory usage' }],
      },
    });
  });

  it('asks about at most 100 tasks per call', async () => {
    ecsMock.on(DescribeTasksCommand).resolves({ tasks: [], failures: [] });
    const ids = Array.from({ length: 250 }, (_, index) => `task-${index}`);

    await createLauncher().describeRunners(ids);
    const batches = ecsMock.commandCalls(DescribeTasksCommand).map((call) => call.args[0].input.tasks ?? []);

    expect(batches.map((batch) => batch.length)).toEqual([100, 100, 50]);
    expect(batches.flat()).toEqual(ids);
    expect(ecsMock.commandCalls(DescribeTasksCommand)[0].args[0].input.cluster).toBe(CLUSTER);
  });
});
