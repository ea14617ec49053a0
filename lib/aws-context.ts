/**
 * Builds the service context on AWS Lambda from the environment that the CDK
 * stack sets on each function. SDK clients are created once per cold start
 * and shared by every context of the process.
 */
import type { DynamoDBClientConfig } from '@aws-sdk/client-dynamodb';
import { ECSClient, type ECSClientConfig } from '@aws-sdk/client-ecs';
import { KMSClient, type KMSClientConfig } from '@aws-sdk/client-kms';
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { SecretsManagerClient, type SecretsManagerClientConfig } from '@aws-sdk/client-secrets-manager';
import { SQSClient, type SQSClientConfig } from '@aws-sdk/client-sqs';
import { AWS_DEFAULTS, parseBoolean, parseCount, parseUrl, readSettings, SettingError, type Settings } from './config.js';
import type { JobEndListener, ServiceContext } from './context.js';
import { EcsLauncher } from './launchers/ecs-launcher.js';
import { logger as rootLogger, type Logger } from './logger.js';
import { DynamoLogLock, LogStore } from './logs/log-store.js';
import { SqsJobQueue } from './queue/job-queue.js';
import { KmsCipher } from './secrets/cipher.js';
import { createStores, type Stores } from './store/index.js';
import { createAwsTriggerParts, readAwsTriggerConfig, type AwsTriggerConfig } from './triggers/aws.js';

/** Names of the environment variables that the CDK stack sets on the functions. */
export const AWS_ENV = {
  tableName: 'KILN_TABLE_NAME',
  bucketName: 'KILN_BUCKET_NAME',
  queueUrl: 'KILN_QUEUE_URL',
  maxReceives: 'KILN_QUEUE_MAX_RECEIVES',
  cluster: 'KILN_CLUSTER',
  taskFamilyPrefix: 'KILN_TASK_FAMILY_PREFIX',
  runnerImages: 'KILN_RUNNER_IMAGES',
  subnets: 'KILN_SUBNETS',
  securityGroup: 'KILN_SECURITY_GROUP',
  assignPublicIp: 'KILN_ASSIGN_PUBLIC_IP',
  fargateSpot: 'KILN_FARGATE_SPOT',
  publicUrl: 'KILN_PUBLIC_URL',
  secretsKey: 'KILN_SECRETS_KEY_ID',
} as const;

/** The deployment's resources and settings, as the functions read them from their environment. */
export interface AwsConfig {
  tableName: string;
  bucketName: string;
  queueUrl: string;
  /** Receives of a queue message before SQS moves it to the dead-letter queue. */
  maxReceives: number;
  cluster: string;
  taskFamilyPrefix: string;
  /** Deployed runner images as `image@arch` keys. */
  deployedImages: ReadonlySet<string>;
  subnets: string[];
  securityGroups: string[];
  assignPublicIp: boolean;
  useSpot: boolean;
  /** The API's public base URL, or null where the API function takes it from each request. */
  publicUrl: string | null;
  /** ARN or id of the KMS key that wraps the data keys of secrets. */
  secretsKeyId: string;
  /** The triggers queue and webhook key secret, where the function is bound to them. */
  triggers: AwsTriggerConfig;
  settings: Settings;
}

/** Reads the deployment from `env`. Throws SettingError naming the first missing or invalid variable. */
export function readAwsConfig(env: NodeJS.ProcessEnv): AwsConfig {
  const required = (name: string): string => {
    const value = env[name]?.trim();
    if (!value) throw new SettingError(`${name} is missing from the function's environment; deploy Kiln with its CDK stack`);

    return value;
  };
  const list = (name: string): string[] =>
    required(name)
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item !== '');
  const publicUrl = env[AWS_ENV.publicUrl]?.trim();

  return {
    tableName: required(AWS_ENV.tableName),
    bucketName: required(AWS_ENV.bucketName),
    queueUrl: required(AWS_ENV.queueUrl),
    maxReceives: parseCount(AWS_ENV.maxReceives, required(AWS_ENV.maxReceives)),
    cluster: required(AWS_ENV.cluster),
    taskFamilyPrefix: required(AWS_ENV.taskFamilyPrefix),
    deployedImages: new Set(list(AWS_ENV.runnerImages)),
    subnets: list(AWS_ENV.subnets),
    securityGroups: list(AWS_ENV.securityGroup),
    assignPublicIp: parseBoolean(AWS_ENV.assignPublicIp, required(AWS_ENV.assignPublicIp)),
    useSpot: parseBoolean(AWS_ENV.fargateSpot, required(AWS_ENV.fargateSpot)),
    publicUrl: publicUrl ? normalizePublicUrl(parseUrl(['https:', 'http:'])(AWS_ENV.publicUrl, publicUrl)) : null,
    secretsKeyId: required(AWS_ENV.secretsKey),
    triggers: readAwsTriggerConfig(env),
    settings: readSettings(env, AWS_DEFAULTS),
  };
}

/** Removes trailing slashes, so paths can be appended to the URL. */
export function normalizePublicUrl(url: string): string {
  return url.replace(/\/+$/, '');
}

/** Client settings that replace the defaults, for tests against local stand-ins. */
export interface AwsClientOverrides {
  dynamodb?: DynamoDBClientConfig;
  s3?: S3ClientConfig;
  sqs?: SQSClientConfig;
  ecs?: ECSClientConfig;
  kms?: KMSClientConfig;
  secretsManager?: SecretsManagerClientConfig;
}

/** The SDK clients and stores that every context of a process shares. */
export interface AwsClients {
  stores: Stores;
  s3: S3Client;
  sqs: SQSClient;
  ecs: ECSClient;
  kms: KMSClient;
  secretsManager: SecretsManagerClient;
}

export function createAwsClients(config: AwsConfig, overrides: AwsClientOverrides = {}): AwsClients {
  return {
    stores: createStores(config.tableName, overrides.dynamodb ?? {}),
    s3: new S3Client(overrides.s3 ?? {}),
    sqs: new SQSClient(overrides.sqs ?? {}),
    ecs: new ECSClient(overrides.ecs ?? {}),
    kms: new KMSClient(overrides.kms ?? {}),
    secretsManager: new SecretsManagerClient(overrides.secretsManager ?? {}),
  };
}

/** A service context and its ECS launcher, which the reconciler also uses to look up runner tasks. */
export interface AwsRuntime {
  config: AwsConfig;
  context: ServiceContext;
  launcher: EcsLauncher;
}

export interface AwsRuntimeOptions {
  logger?: Logger;
  /** Receives each job that ends. */
  jobEnd?: JobEndListener;
}

/** Builds a service context whose links and runners point at `publicUrl`. */
export function createAwsRuntime(
  config: AwsConfig,
  clients: AwsClients,
  publicUrl: string,
  options: AwsRuntimeOptions = {},
): AwsRuntime {
  const logger = options.logger ?? rootLogger;
  const url = normalizePublicUrl(publicUrl);
  const launcher = new EcsLauncher({
    ecs: clients.ecs,
    cluster: config.cluster,
    taskFamilyPrefix: config.taskFamilyPrefix,
    deployedImages: config.deployedImages,
    subnets: config.subnets,
    securityGroups: config.securityGroups,
    assignPublicIp: config.assignPublicIp,
    useSpot: config.useSpot,
    apiUrl: url,
    logger,
  });
  const triggers = createAwsTriggerParts(config.triggers, clients);
  const context: ServiceContext = {
    settings: config.settings,
    stores: clients.stores,
    logs: new LogStore(clients.s3, config.bucketName, new DynamoLogLock(clients.stores.locks)),
    queue: new SqsJobQueue(clients.sqs, config.queueUrl),
    launcher,
    logger,
    secretCipher: new KmsCipher(clients.kms, config.secretsKeyId),
    jobEnd: options.jobEnd ?? triggers.jobEnd,
    webhookKey: triggers.webhookKey,
    publicUrl: url,
  };

  return { config, context, launcher };
}

let shared: { config: AwsConfig; clients: AwsClients } | null = null;
const runtimes = new Map<string, AwsRuntime>();

/** Most distinct public URLs kept per process: the API's own endpoint and a custom domain fit well within it. */
const MAX_RUNTIMES = 8;

/**
 * Returns this process's runtime for `publicUrl`, by default the deployment's
 * KILN_PUBLIC_URL. The environment is read and the clients are created on
 * the first call only.
 */
export function awsRuntime(publicUrl?: string): AwsRuntime {
  shared ??= (() => {
    const config = readAwsConfig(process.env);
    return { config, clients: createAwsClients(config) };
  })();

  const url = publicUrl ?? shared.config.publicUrl;
  if (url === null) {
    throw new SettingError(`${AWS_ENV.publicUrl} is missing from the function's environment, and no request supplied a URL`);
  }

  let runtime = runtimes.get(url);
  if (runtime === undefined) {
    if (runtimes.size >= MAX_RUNTIMES) runtimes.delete(runtimes.keys().next().value as string);
    runtime = createAwsRuntime(shared.config, shared.clients, url);
    runtimes.set(url, runtime);
  }

  return runtime;
}
