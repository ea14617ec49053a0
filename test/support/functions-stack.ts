import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { SQSRecord } from 'aws-lambda';
import { LOCAL_CREDENTIALS, LOCAL_REGION, startDynalite, startS3rver } from '../../infra/local/aws-local.js';
import { createAwsClients, createAwsRuntime, readAwsConfig, type AwsClients, type AwsRuntime } from '../../lib/aws-context.js';
import { submitJob, validateJobRequest } from '../../lib/jobs/submit.js';
import { ensureTable, type JobRecord } from '../../lib/store/index.js';
import { quietLogger } from './local-stack.js';

/**
 * Nothing listens on the discard port, so a client that a test leaves
 * unmocked fails at once on loopback instead of reaching AWS.
 */
export const UNREACHABLE_ENDPOINT = 'http://127.0.0.1:9';

export const QUEUE_URL = `${UNREACHABLE_ENDPOINT}/000000000000/kiln-jobs`;

export const TRIGGERS_QUEUE_URL = `${UNREACHABLE_ENDPOINT}/000000000000/kiln-triggers`;

/**
 * Builds the environment that the CDK stack gives the functions that end
 * jobs, with test values. The stack also gives the API function
 * KILN_WEBHOOK_KEY_SECRET, which tests of that function add.
 */
export function functionEnvironment(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    KILN_TABLE_NAME: 'kiln-functions-test',
    KILN_BUCKET_NAME: 'kiln-functions-test',
    KILN_QUEUE_URL: QUEUE_URL,
    KILN_QUEUE_MAX_RECEIVES: '5',
    KILN_CLUSTER: 'kiln-builds',
    KILN_TASK_FAMILY_PREFIX: 'Kiln-runner',
    KILN_RUNNER_IMAGES: 'alpine/latest@x86_64,alpine/latest@arm64',
    KILN_SUBNETS: 'subnet-1,subnet-2',
    KILN_SECURITY_GROUP: 'sg-1',
    KILN_ASSIGN_PUBLIC_IP: 'true',
    KILN_FARGATE_SPOT: 'false',
    KILN_PUBLIC_URL: 'https://kiln.example.org',
    KILN_SECRETS_KEY_ID: 'arn:aws:kms:us-east-1:000000000000:key/00000000-0000-0000-0000-000000000000',
    KILN_TRIGGERS_QUEUE_URL: TRIGGERS_QUEUE_URL,
    ...overrides,
  };
}

/** The functions' runtime over dynalite and s3rver on ephemeral loopback ports; SQS, ECS, KMS and Secrets Manager are left to mocks. */
export interface FunctionsStack {
  runtime: AwsRuntime;
  clients: AwsClients;
  /** Stores a queued job of `user` from `manifest`, by default one with one task and no triggers. */
  createJob(user: string, manifest?: string): Promise<JobRecord>;
  close(): Promise<void>;
}

export async function startFunctionsStack(env: Record<string, string> = {}): Promise<FunctionsStack> {
  const directory = await mkdtemp(path.join(os.tmpdir(), 'kiln-functions-'));
  const dynamodb = await startDynalite({ port: 0 });
  const s3Server = await startS3rver({ port: 0, directory });

  const config = readAwsConfig(functionEnvironment(env));
  const base = { region: LOCAL_REGION, credentials: LOCAL_CREDENTIALS };
  const clients = createAwsClients(config, {
    dynamodb: { ...base, endpoint: dynamodb.endpoint },
    s3: { ...base, endpoint: s3Server.endpoint, forcePathStyle: true },
    sqs: { ...base, endpoint: UNREACHABLE_ENDPOINT, maxAttempts: 1 },
    ecs: { ...base, endpoint: UNREACHABLE_ENDPOINT, maxAttempts: 1 },
    kms: { ...base, endpoint: UNREACHABLE_ENDPOINT, maxAttempts: 1 },
    secretsManager: { ...base, endpoint: UNREACHABLE_ENDPOINT, maxAttempts: 1 },
  });
  await ensureTable(clients.stores.dynamodb, config.tableName);
  await clients.s3.send(new CreateBucketCommand({ Bucket: config.bucketName }));
  const runtime = createAwsRuntime(config, clients, config.publicUrl ?? '', { logger: quietLogger });

  return {
    runtime,
    clients,
    createJob: async (user, manifest = 'image: alpine/latest\ntasks:\n  - build: make\n') => {
      const request = validateJobRequest({ manifest });
      return submitJob(runtime.context, { user, scopes: ['jobs:read', 'jobs:write'] }, request);
    },
    close: async () => {
      await dynamodb.close();
      await s3Server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/** Builds an SQS record as Lambda delivers it. */
export function sqsRecord(messageId: string, body: string, receiveCount: number): SQSRecord {
  return {
    messageId,
    receiptHandle: `receipt-${messageId}`,
    body,
    attributes: {
      ApproximateReceiveCount: String(receiveCount),
      SentTimestamp: '1700000000000',
      SenderId: 'AIDAEXAMPLE',
      ApproximateFirstReceiveTimestamp: '1700000000001',
    },
    messageAttributes: {},
    md5OfBody: '',
    eventSource: 'aws:sqs',
    eventSourceARN: 'arn:aws:sqs:us-east-1:000000000000:kiln-jobs',
    awsRegion: 'us-east-1',
  };
}
