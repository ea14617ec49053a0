import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import {
  HttpApi,
  HttpMethod,
  HttpRoute,
  HttpRouteKey,
  HttpStage,
  LogGroupLogDestination,
  PayloadFormatVersion,
} from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as kms from 'aws-cdk-lib/aws-kms';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { AWS_ENV } from '../lib/aws-context.js';
import { AWS_DEFAULTS, readSettings, SettingError } from '../lib/config.js';
import { IMAGES, offeredImageNames, type Architecture, type CatalogImage } from '../lib/manifest/images.js';
import { TABLE_KEYS, tableDefinition } from '../lib/store/index.js';
import { suppressKilnFindings } from './nag-suppressions.js';
import { RunnerFleet } from './runner-fleet.js';
import { ServiceFunction } from './service-function.js';
import { KilnTriggers } from './triggers.js';

/** Settings of a Kiln deployment. Each `KILN_*` setting takes the format that the service reads from its environment. */
export interface KilnProps {
  /**
   * A job's deadline, counted from the runner's claim (KILN_JOB_TIMEOUT), such as `45m` or `2h`.
   * @default '45m'
   */
  readonly jobTimeout?: string;
  /**
   * Lifetime of the presigned log and artifact links in API responses (KILN_LOG_LINK_TTL).
   * Lambda's temporary credentials sign the links, so a link stops working at the end of this lifetime
   * or when those credentials expire, whichever comes first.
   * @default '1h'
   */
  readonly logLinkTtl?: string;
  /**
   * Size cap of one log (KILN_LOG_MAX_BYTES), such as `64MiB`.
   * @default '64MiB'
   */
  readonly logMaxBytes?: string;
  /**
   * Builds running at once in the whole service (KILN_MAX_RUNNING).
   * @default 100
   */
  readonly maxRunning?: number;
  /**
   * Builds running at once per user (KILN_MAX_RUNNING_PER_USER).
   * @default 20
   */
  readonly maxRunningPerUser?: number;
  /**
   * Whether requests without a token may read public jobs (KILN_ANONYMOUS_READ).
   * @default false
   */
  readonly anonymousRead?: boolean;
  /**
   * Whether webhooks may target loopback and private addresses (KILN_WEBHOOK_ALLOW_PRIVATE).
   * @default false
   */
  readonly webhookAllowPrivate?: boolean;
  /**
   * SMTP server for trigger email (KILN_SMTP_URL), such as `smtps://user:password@mail.example.org:465`.
   * The URL, password included, is stored in the functions' environment.
   * @default - no SMTP server
   */
  readonly smtpUrl?: string;
  /**
   * RFC 7662 introspection endpoint that validates bearer tokens (KILN_OAUTH_INTROSPECTION_URL).
   * @default - bearer tokens are looked up in the table like other tokens
   */
  readonly oauthIntrospectionUrl?: string;
  /**
   * Days that build logs and artifacts are kept in S3 before they expire; 0 keeps them forever.
   * @default 90
   */
  readonly retentionDays?: number;
  /**
   * CPU units of each build task; 1024 is one vCPU. Fargate allows 256, 512, 1024, 2048, 4096, 8192 and 16384.
   * @default 2048
   */
  readonly buildCpu?: number;
  /**
   * Memory of each build task in MiB, within the range that Fargate allows for {@link buildCpu}.
   * @default 4096
   */
  readonly buildMemoryMiB?: number;
  /**
   * Run x86_64 builds on Fargate Spot, which costs less but may stop a build when AWS needs the capacity back.
   * arm64 builds always use Fargate, because Fargate Spot does not run ARM64 tasks.
   * @default false
   */
  readonly fargateSpot?: boolean;
  /**
   * Run builds in private subnets behind a NAT gateway instead of in public subnets with public IPs.
   * Builds accept no inbound traffic either way; the NAT gateway gives them one fixed outbound address, at an hourly cost.
   * @default false
   */
  readonly natGateway?: boolean;
  /**
   * Protect the table from deletion, also when the stack is deleted.
   * @default true
   */
  readonly deletionProtection?: boolean;
  /**
   * The API's public base URL, for a custom domain in front of the HTTP API.
   * @default - the HTTP API's own execute-api URL
   */
  readonly publicUrl?: string;
  /**
   * Steady-state requests per second that the API stage accepts.
   * @default 50
   */
  readonly apiRateLimit?: number;
  /**
   * Requests that the API stage accepts in a burst above {@link apiRateLimit}.
   * @default 100
   */
  readonly apiBurstLimit?: number;
  /**
   * Canonical names of the catalog images to build, such as `['alpine/edge', 'debian/stable']`.
   * Jobs that ask for another image fail with the list of deployed images.
   * @default - every image of the catalog
   */
  readonly images?: readonly string[];
  /**
   * Architectures to build images for.
   * @default ['x86_64', 'arm64']
   */
  readonly architectures?: readonly Architecture[];
  /**
   * The images' KILN_IMAGE_VERSION build argument. Changing it rebuilds every image on the next deploy,
   * which picks up new releases behind moving tags such as `alpine:latest`.
   * @default '1'
   */
  readonly runnerImageVersion?: string;
  /**
   * Prefix of the build task definition families. Two Kiln constructs in one account and region need different prefixes.
   * @default - the stack name followed by `-runner`
   */
  readonly taskFamilyPrefix?: string;
  /**
   * From address of trigger email (KILN_EMAIL_FROM), an address or domain verified in SES, such as `Kiln <ci@example.org>`.
   * @default - email triggers send nothing, and the setup log states why
   */
  readonly emailFrom?: string;
  /**
   * The SES identity that trigger email is sent on: a verified domain such as `example.org`, or a verified address
   * such as `ci@example.org`. The triggers function may send only on this identity and only from {@link emailFrom}.
   * @default - the domain of {@link emailFrom}
   */
  readonly emailIdentity?: string;
}

/** Receives of a job message before SQS moves it to the dead-letter queue. */
export const MAX_RECEIVES = 5;

/** Timeouts of the functions. The queue's visibility timeout is six times the dispatch timeout, as AWS advises for SQS event sources. */
export const FUNCTION_TIMEOUTS = {
  api: Duration.seconds(29),
  dispatch: Duration.seconds(60),
  taskStopped: Duration.seconds(30),
  reconcile: Duration.minutes(2),
} as const;

/** How often the reconciler runs. */
export const RECONCILE_INTERVAL = Duration.minutes(5);

/** How long the functions' and runners' own diagnostics are kept. */
const SERVICE_LOG_RETENTION = logs.RetentionDays.ONE_MONTH;

/** The DynamoDB actions that the stores call. */
const TABLE_ACTIONS = ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:Query'];

/** The four Lambda functions of a deployment's job flow; the triggers function is {@link Kiln.triggers}. */
export interface KilnFunctions {
  readonly api: ServiceFunction;
  readonly dispatch: ServiceFunction;
  readonly taskStopped: ServiceFunction;
  readonly reconcile: ServiceFunction;
}

/**
 * A complete Kiln deployment. It contains the HTTP API, the job table, the
 * log bucket, the job queue with its dead-letter queue, and the build cluster
 * with one task definition per catalog image and architecture. Four functions
 * tie them together, {@link KilnTriggers} sends the webhooks and emails of
 * ended jobs, and alarms watch the parts that fail quietly.
 */
export class Kiln extends Construct {
  readonly table: dynamodb.Table;
  readonly bucket: s3.Bucket;
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  readonly secretsKey: kms.Key;
  readonly fleet: RunnerFleet;
  readonly functions: KilnFunctions;
  readonly triggers: KilnTriggers;
  readonly httpApi: HttpApi;
  readonly stage: HttpStage;
  /** The API's public base URL without a trailing slash. */
  readonly apiUrl: string;
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: KilnProps = {}) {
    super(scope, id);

    const settingsEnvironment = resolveSettingsEnvironment(props);
    const images = resolveImages(props.images);
    const architectures = props.architectures ?? ['x86_64', 'arm64'];
    const buildCpu = props.buildCpu ?? 2048;
    const buildMemoryMiB = props.buildMemoryMiB ?? 4096;
    validateFargateSize(buildCpu, buildMemoryMiB);
    const retentionDays = requireWholeNumber('retentionDays', props.retentionDays ?? 90, 0);
    const taskFamilyPrefix = props.taskFamilyPrefix ?? `${Stack.of(this).stackName}-runner`;
    if (props.emailIdentity !== undefined && props.emailFrom === undefined) {
      throw new SettingError('emailIdentity is set but emailFrom is not: set KILN_EMAIL_FROM to an address on that identity');
    }

    this.table = this.createTable(props.deletionProtection ?? true);
    this.bucket = this.createBucket(retentionDays);
    this.secretsKey = new kms.Key(this, 'SecretsKey', {
      description: 'Kiln: wraps the data keys that encrypt build secrets',
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    this.queue = new sqs.Queue(this, 'JobQueue', {
      visibilityTimeout: Duration.seconds(FUNCTION_TIMEOUTS.dispatch.toSeconds() * 6),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: MAX_RECEIVES },
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });

    this.fleet = new RunnerFleet(this, 'Fleet', {
      images,
      architectures,
      cpu: buildCpu,
      memoryMiB: buildMemoryMiB,
      natGateway: props.natGateway ?? false,
      taskFamilyPrefix,
      imageVersion: props.runnerImageVersion ?? '1',
      logRetention: SERVICE_LOG_RETENTION,
    });

    // The API function's own URL would be a dependency cycle, so it takes
    // the URL from each request unless a custom one is set.
    this.httpApi = new HttpApi(this, 'HttpApi', {
      description: "Kiln: build.sr.ht's REST API and the runner protocol",
      createDefaultStage: false,
    });
    const publicUrl = props.publicUrl?.replace(/\/+$/, '');
    this.apiUrl = publicUrl ?? this.httpApi.apiEndpoint;

    const environment = {
      ...settingsEnvironment,
      [AWS_ENV.tableName]: this.table.tableName,
      [AWS_ENV.bucketName]: this.bucket.bucketName,
      [AWS_ENV.queueUrl]: this.queue.queueUrl,
      [AWS_ENV.maxReceives]: String(MAX_RECEIVES),
      [AWS_ENV.cluster]: this.fleet.cluster.clusterName,
      [AWS_ENV.taskFamilyPrefix]: taskFamilyPrefix,
      [AWS_ENV.runnerImages]: [...this.fleet.taskDefinitions.keys()].join(','),
      [AWS_ENV.subnets]: this.fleet.buildSubnets.map((subnet) => subnet.subnetId).join(','),
      [AWS_ENV.securityGroup]: this.fleet.securityGroup.securityGroupId,
      [AWS_ENV.assignPublicIp]: String(this.fleet.assignPublicIp),
      [AWS_ENV.fargateSpot]: String(props.fargateSpot ?? false),
      [AWS_ENV.secretsKey]: this.secretsKey.keyArn,
    };
    this.functions = this.createFunctions(environment, publicUrl);
    this.grantFunctions();
    this.triggers = new KilnTriggers(this, 'Triggers', {
      table: this.table,
      bucket: this.bucket,
      environment: { ...environment, [AWS_ENV.publicUrl]: this.apiUrl },
      emailFrom: props.emailFrom,
      emailIdentity: props.emailIdentity,
      logRetention: SERVICE_LOG_RETENTION,
    });
    // Each of the four functions may end a job, which queues the job's triggers. The API ends jobs on cancel and on the
    // runner's final report, dispatch when a runner cannot start, and task-stopped and reconcile when a build is lost
    // or times out.
    for (const fn of Object.values(this.functions) as ServiceFunction[]) this.triggers.bindEnqueue(fn.function);
    this.triggers.bindWebhookKey(this.functions.api.function);
    this.stage = this.createApi(props);
    this.createEventRules();
    this.createAlarms();

    suppressKilnFindings(this);
  }

  private createTable(deletionProtection: boolean): dynamodb.Table {
    const definition = tableDefinition('kiln');
    const attribute = (name: string): dynamodb.Attribute => {
      const type = definition.AttributeDefinitions?.find((candidate) => candidate.AttributeName === name)?.AttributeType;
      if (type !== 'S') throw new Error(`table attribute ${name} is ${type ?? 'undefined'}; only string keys are mapped`);

      return { name, type: dynamodb.AttributeType.STRING };
    };
    const keyOf = (schema: ReadonlyArray<{ AttributeName?: string; KeyType?: string }> | undefined, keyType: string) =>
      attribute(schema?.find((key) => key.KeyType === keyType)?.AttributeName ?? '');

    const table = new dynamodb.Table(this, 'Table', {
      partitionKey: keyOf(definition.KeySchema, 'HASH'),
      sortKey: keyOf(definition.KeySchema, 'RANGE'),
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      deletionProtection,
      timeToLiveAttribute: TABLE_KEYS.timeToLive,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    for (const index of definition.GlobalSecondaryIndexes ?? []) {
      table.addGlobalSecondaryIndex({
        indexName: index.IndexName ?? '',
        partitionKey: keyOf(index.KeySchema, 'HASH'),
        sortKey: keyOf(index.KeySchema, 'RANGE'),
        projectionType: dynamodb.ProjectionType.ALL,
      });
    }

    return table;
  }

  private createBucket(retentionDays: number): s3.Bucket {
    const lifecycleRules: s3.LifecycleRule[] = [{ id: 'AbortIncompleteUploads', abortIncompleteMultipartUploadAfter: Duration.days(1) }];
    if (retentionDays > 0) lifecycleRules.push({ id: 'ExpireBuildOutput', expiration: Duration.days(retentionDays) });

    return new s3.Bucket(this, 'Bucket', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules,
      removalPolicy: RemovalPolicy.RETAIN,
    });
  }

  private createFunctions(environment: Record<string, string>, publicUrl: string | undefined): KilnFunctions {
    const withUrl: Record<string, string> = { ...environment, [AWS_ENV.publicUrl]: this.apiUrl };
    const make = (id: string, entry: string, description: string, timeout: Duration, memorySize: number, env = withUrl) =>
      new ServiceFunction(this, id, { entry, description, timeout, memorySize, environment: env, logRetention: SERVICE_LOG_RETENTION });

    const apiEnvironment = publicUrl ? withUrl : environment;
    const functions: KilnFunctions = {
      api: make('Api', 'functions/api.ts', 'Kiln: REST API and runner protocol', FUNCTION_TIMEOUTS.api, 1024, apiEnvironment),
      dispatch: make('Dispatch', 'functions/dispatch-job.ts', 'Kiln: starts build tasks for queued jobs', FUNCTION_TIMEOUTS.dispatch, 512),
      taskStopped: make('TaskStopped', 'functions/task-stopped.ts', 'Kiln: fails jobs whose build task stopped', FUNCTION_TIMEOUTS.taskStopped, 512),
      reconcile: make('Reconcile', 'functions/reconcile.ts', 'Kiln: times out, requeues and fails lost jobs', FUNCTION_TIMEOUTS.reconcile, 512),
    };

    functions.dispatch.function.addEventSource(
      new SqsEventSource(this.queue, { batchSize: 10, reportBatchItemFailures: true, maxConcurrency: 10 }),
    );

    return functions;
  }

  /** Grants each function's role exactly the calls that its code makes, scoped to this deployment's resources. */
  private grantFunctions(): void {
    const { api, dispatch, taskStopped, reconcile } = this.functions;
    const clusterTasks = this.fleet.clusterTasksArn();
    const runnerTaskDefinitions = this.fleet.taskDefinitionsArn();
    const indexNames = (tableDefinition('kiln').GlobalSecondaryIndexes ?? []).map((index) => index.IndexName ?? '');
    const tableResources = [this.table.tableArn, ...indexNames.map((name) => `${this.table.tableArn}/index/${name}`)];

    for (const fn of [api, dispatch, taskStopped, reconcile]) {
      fn.allow({ actions: TABLE_ACTIONS, resources: tableResources });
      fn.allow({ actions: ['s3:GetObject', 's3:PutObject'], resources: [this.bucket.arnForObjects('*')] });
      // Without ListBucket, S3 returns 403 instead of 404 for a missing log,
      // and appending to a log that no runner wrote would fail.
      fn.allow({ actions: ['s3:ListBucket'], resources: [this.bucket.bucketArn] });
    }
    for (const fn of [api, dispatch, reconcile]) {
      fn.allow({ actions: ['sqs:SendMessage'], resources: [this.queue.queueArn] });
    }
    for (const fn of [api, dispatch, reconcile]) {
      fn.allow({ actions: ['ecs:StopTask'], resources: [clusterTasks] });
    }

    api.allow({ actions: ['kms:GenerateDataKey', 'kms:Decrypt'], resources: [this.secretsKey.keyArn] });

    dispatch.allow({
      actions: ['ecs:RunTask'],
      resources: [runnerTaskDefinitions],
      conditions: { ArnEquals: { 'ecs:cluster': this.fleet.cluster.clusterArn } },
    });
    dispatch.allow({
      actions: ['ecs:TagResource'],
      resources: [clusterTasks],
      conditions: { StringEquals: { 'ecs:CreateAction': 'RunTask' } },
    });
    dispatch.allow({
      actions: ['iam:PassRole'],
      resources: [this.fleet.taskRole.roleArn, this.fleet.executionRole.roleArn],
      conditions: { StringEquals: { 'iam:PassedToService': 'ecs-tasks.amazonaws.com' } },
    });

    reconcile.allow({ actions: ['ecs:DescribeTasks'], resources: [clusterTasks] });
  }

  private createApi(props: KilnProps): HttpStage {
    const integration = new HttpLambdaIntegration('ApiIntegration', this.functions.api.function, {
      payloadFormatVersion: PayloadFormatVersion.VERSION_2_0,
    });
    for (const path of ['/api/{proxy+}', '/runner/{proxy+}']) {
      this.httpApi.addRoutes({ path, methods: [HttpMethod.ANY], integration });
    }
    new HttpRoute(this.httpApi, 'DefaultRoute', { httpApi: this.httpApi, routeKey: HttpRouteKey.DEFAULT, integration });

    const accessLogs = new logs.LogGroup(this, 'ApiAccessLogs', { retention: SERVICE_LOG_RETENTION });

    return new HttpStage(this, 'DefaultStage', {
      httpApi: this.httpApi,
      stageName: '$default',
      autoDeploy: true,
      throttle: {
        rateLimit: requireWholeNumber('apiRateLimit', props.apiRateLimit ?? 50, 1),
        burstLimit: requireWholeNumber('apiBurstLimit', props.apiBurstLimit ?? 100, 1),
      },
      // Headers are left out of the access log, because they carry tokens.
      accessLogSettings: {
        destination: new LogGroupLogDestination(accessLogs),
        format: AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            ip: '$context.identity.sourceIp',
            time: '$context.requestTime',
            method: '$context.httpMethod',
            path: '$context.path',
            status: '$context.status',
            bytes: '$context.responseLength',
            latencyMs: '$context.responseLatency',
            error: '$context.integrationErrorMessage',
          }),
        ),
      },
    });
  }

  private createEventRules(): void {
    new events.Rule(this, 'TaskStoppedRule', {
      description: 'Kiln: build tasks that stopped',
      eventPattern: {
        source: ['aws.ecs'],
        detailType: ['ECS Task State Change'],
        detail: {
          clusterArn: [this.fleet.cluster.clusterArn],
          lastStatus: ['STOPPED'],
          startedBy: events.Match.prefix('kiln-job-'),
        },
      },
      targets: [new targets.LambdaFunction(this.functions.taskStopped.function, { retryAttempts: 4, maxEventAge: Duration.hours(2) })],
    });

    new events.Rule(this, 'ReconcileSchedule', {
      description: 'Kiln: reconcile jobs',
      schedule: events.Schedule.rate(RECONCILE_INTERVAL),
      // The next scheduled run retries anyway.
      targets: [new targets.LambdaFunction(this.functions.reconcile.function, { retryAttempts: 0 })],
    });
  }

  private createAlarms(): void {
    const period = Duration.minutes(5);
    const alarm = (id: string, metric: cloudwatch.IMetric, description: string) => {
      this.alarms.push(
        new cloudwatch.Alarm(this, id, {
          metric,
          threshold: 1,
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
          alarmDescription: description,
        }),
      );
    };

    alarm(
      'DeadLetterQueueAlarm',
      this.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period, statistic: 'Maximum' }),
      'Kiln: job messages reached the dead-letter queue, so their jobs were never dispatched',
    );
    alarm(
      'TriggersDeadLetterQueueAlarm',
      this.triggers.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period, statistic: 'Maximum' }),
      'Kiln: triggers messages reached the dead-letter queue, so some webhooks or emails of ended jobs were not sent',
    );
    alarm('TriggersErrorsAlarm', this.triggers.function.metricErrors({ period, statistic: 'Sum' }), 'Kiln: the triggers function failed');
    for (const [name, fn] of Object.entries(this.functions) as Array<[string, ServiceFunction]>) {
      const id = name[0].toUpperCase() + name.slice(1);
      alarm(`${id}ErrorsAlarm`, fn.function.metricErrors({ period, statistic: 'Sum' }), `Kiln: the ${name} function failed`);
      alarm(`${id}ThrottlesAlarm`, fn.function.metricThrottles({ period, statistic: 'Sum' }), `Kiln: the ${name} function was throttled`);
    }
  }
}

/**
 * Builds the functions' `KILN_*` settings and checks them with the same
 * parser the service uses, so a bad value fails synthesis with the
 * service's own message.
 */
export function resolveSettingsEnvironment(props: KilnProps): Record<string, string> {
  const environment: Record<string, string> = {
    KILN_JOB_TIMEOUT: props.jobTimeout ?? '45m',
    KILN_LOG_LINK_TTL: props.logLinkTtl ?? '1h',
    KILN_LOG_MAX_BYTES: props.logMaxBytes ?? '64MiB',
    KILN_MAX_RUNNING: String(props.maxRunning ?? AWS_DEFAULTS.maxRunning),
    KILN_MAX_RUNNING_PER_USER: String(props.maxRunningPerUser ?? AWS_DEFAULTS.maxRunningPerUser),
    KILN_ANONYMOUS_READ: String(props.anonymousRead ?? false),
    KILN_WEBHOOK_ALLOW_PRIVATE: String(props.webhookAllowPrivate ?? AWS_DEFAULTS.webhookAllowPrivate),
  };
  if (props.smtpUrl) environment.KILN_SMTP_URL = props.smtpUrl;
  if (props.oauthIntrospectionUrl) environment.KILN_OAUTH_INTROSPECTION_URL = props.oauthIntrospectionUrl;

  readSettings(environment, AWS_DEFAULTS);

  return environment;
}

function resolveImages(names: readonly string[] | undefined): CatalogImage[] {
  if (names === undefined) return [...IMAGES];

  return names.map((name) => {
    const image = IMAGES.find((candidate) => candidate.name === name);
    if (!image) throw new SettingError(`images: "${name}" is not a canonical catalog name. Use some of: ${offeredImageNames().join(', ')}`);

    return image;
  });
}

function requireWholeNumber(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) throw new SettingError(`${name}=${value} must be a whole number of at least ${min}`);

  return value;
}

/** Memory ranges in MiB that Fargate allows for each CPU value, as the AWS SDK documentation of the task definition's `memory` field lists them. */
const FARGATE_SIZES: Record<number, { min: number; max: number; step: number; extra?: number[] }> = {
  256: { min: 1024, max: 2048, step: 1024, extra: [512] },
  512: { min: 1024, max: 4096, step: 1024 },
  1024: { min: 2048, max: 8192, step: 1024 },
  2048: { min: 4096, max: 16384, step: 1024 },
  4096: { min: 8192, max: 30720, step: 1024 },
  8192: { min: 16384, max: 61440, step: 4096 },
  16384: { min: 32768, max: 122880, step: 8192 },
};

/** Throws SettingError unless Fargate runs tasks of `cpu` units with `memoryMiB`. */
export function validateFargateSize(cpu: number, memoryMiB: number): void {
  const size = FARGATE_SIZES[cpu];
  if (!size) throw new SettingError(`buildCpu=${cpu} is not a Fargate CPU value; use one of ${Object.keys(FARGATE_SIZES).join(', ')}`);

  const fits = (memoryMiB >= size.min && memoryMiB <= size.max && (memoryMiB - size.min) % size.step === 0) || size.extra?.includes(memoryMiB);
  if (!fits) {
    throw new SettingError(
      `buildMemoryMiB=${memoryMiB} does not fit buildCpu=${cpu}: Fargate allows ${size.extra ? `${size.extra.join(', ')} or ` : ''}` +
        `${size.min} to ${size.max} MiB in steps of ${size.step}`,
    );
  }
}

