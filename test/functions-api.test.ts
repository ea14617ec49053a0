import { ECSClient, RunTaskCommand } from '@aws-sdk/client-ecs';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { LOCAL_CREDENTIALS, LOCAL_REGION, startDynalite, startS3rver, type LocalServer } from '../infra/local/aws-local.js';
import { createToken } from '../lib/auth/tokens.js';
import { createStores, ensureTable } from '../lib/store/index.js';
import { keyPairFromSecret } from '../lib/triggers/webhook-key.js';
import { functionEnvironment, sqsRecord, TRIGGERS_QUEUE_URL, UNREACHABLE_ENDPOINT } from './support/functions-stack.js';

const sqsMock = mockClient(SQSClient);
const ecsMock = mockClient(ECSClient);
const secretsMock = mockClient(SecretsManagerClient);
const WEBHOOK_KEY_SECRET = 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:KilnWebhookKey-AbCdEf';
const DOMAIN = 'abc123.execute-api.eu-west-1.amazonaws.com';
const MANIFEST = 'image: alpine/latest\ntasks:\n  - build: make\n';

function httpEvent(method: string, rawPath: string, options: { body?: string; headers?: Record<string, string> } = {}): APIGatewayProxyEventV2 {
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath,
    rawQueryString: '',
    headers: { host: DOMAIN, ...(options.body ? { 'content-type': 'application/json' } : {}), ...options.headers },
    requestContext: {
      accountId: '111122223333',
      apiId: 'abc123',
      domainName: DOMAIN,
      domainPrefix: 'abc123',
      http: { method, path: rawPath, protocol: 'HTTP/1.1', sourceIp: '192.0.2.1', userAgent: 'test' },
      requestId: 'request-1',
      routeKey: '$default',
      stage: '$default',
      time: '04/Dec/2026:12:00:00 +0000',
      timeEpoch: 1796400000000,
    },
    body: options.body,
    isBase64Encoded: false,
  };
}

const LAMBDA_CONTEXT = { awsRequestId: 'request-1', functionName: 'KilnApi' } as Context;

/**
 * Runs the real Lambda entry points with the environment that the CDK stack
 * sets, against dynalite and s3rver on loopback. The SDK reads their
 * endpoints from AWS_ENDPOINT_URL_*, the same variables a developer would
 * set, and SQS, ECS and Secrets Manager are mocked.
 */
describe('API function', () => {
  let dynamodb: LocalServer;
  let s3Server: LocalServer;
  let directory: string;
  let token: string;
  const savedEnv = { ...process.env };
  let api: typeof import('../functions/api.js');
  let dispatch: typeof import('../functions/dispatch-job.js');
  let awsContext: typeof import('../lib/aws-context.js');

  beforeAll(async () => {
    directory = mkdtempSync(path.join(os.tmpdir(), 'kiln-api-function-'));
    dynamodb = await startDynalite({ port: 0 });
    s3Server = await startS3rver({ port: 0, directory });

    const environment = functionEnvironment({ KILN_WEBHOOK_KEY_SECRET: WEBHOOK_KEY_SECRET });
    // The stack gives the API function no KILN_PUBLIC_URL, so it takes the URL from each request.
    delete environment.KILN_PUBLIC_URL;
    Object.assign(process.env, environment, {
      AWS_REGION: LOCAL_REGION,
      AWS_ACCESS_KEY_ID: LOCAL_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: LOCAL_CREDENTIALS.secretAccessKey,
      AWS_ENDPOINT_URL_DYNAMODB: dynamodb.endpoint,
      AWS_ENDPOINT_URL_S3: s3Server.endpoint,
      AWS_ENDPOINT_URL_SQS: UNREACHABLE_ENDPOINT,
      AWS_ENDPOINT_URL_ECS: UNREACHABLE_ENDPOINT,
      AWS_ENDPOINT_URL_KMS: UNREACHABLE_ENDPOINT,
      AWS_ENDPOINT_URL_SECRETS_MANAGER: UNREACHABLE_ENDPOINT,
      AWS_EC2_METADATA_DISABLED: 'true',
    });

    const stores = createStores(environment.KILN_TABLE_NAME);
    await ensureTable(stores.dynamodb, environment.KILN_TABLE_NAME);
    await new S3Client({ forcePathStyle: true }).send(new CreateBucketCommand({ Bucket: environment.KILN_BUCKET_NAME }));
    ({ token } = await createToken(stores.tokens, { user: 'alice', scopes: ['jobs:read', 'jobs:write'] }));

    api = await import('../functions/api.js');
    dispatch = await import('../functions/dispatch-job.js');
    awsContext = await import('../lib/aws-context.js');
  });

  afterAll(async () => {
    process.env = savedEnv;
    await dynamodb.close();
    await s3Server.close();
    rmSync(directory, { recursive: true, force: true });
    sqsMock.restore();
    ecsMock.restore();
    secretsMock.restore();
  });

  beforeEach(() => {
    sqsMock.reset();
    ecsMock.reset();
    secretsMock.reset();
    sqsMock.on(SendMessageCommand).resolves({ MessageId: 'sent' });
  });

  async function call(event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> {
    return (await api.handler(event, LAMBDA_CONTEXT)) as APIGatewayProxyStructuredResultV2;
  }

  it('takes the public URL from the request domain', () => {
    expect(api.publicUrlOf(httpEvent('GET', '/'), {})).toBe(`https://${DOMAIN}`);
  });

  it('prefers a configured public URL', () => {
    expect(api.publicUrlOf(httpEvent('GET', '/'), { KILN_PUBLIC_URL: 'https://ci.example.org/' })).toBe('https://ci.example.org');
  });

  it('rejects a request without a token', async () => {
    const response = await call(httpEvent('GET', '/api/jobs/1'));

    expect(response.statusCode).toBe(401);
    expect(JSON.parse(response.body ?? '{}')).toEqual({ errors: [expect.objectContaining({ reason: expect.any(String) })] });
  });

  it('runs a job from submit to claim', async () => {
    const submitted = await call(
      httpEvent('POST', '/api/jobs', { body: JSON.stringify({ manifest: MANIFEST }), headers: { authorization: `token ${token}` } }),
    );
    const job = JSON.parse(submitted.body ?? '{}') as { id: number; status: string };

    expect(submitted.statusCode).toBe(200);
    expect(job.status).toBe('queued');
    expect(sqsMock.commandCalls(SendMessageCommand)[0].args[0].input.MessageBody).toBe(JSON.stringify({ jobId: job.id }));

    ecsMock.on(RunTaskCommand).resolves({ tasks: [{ taskArn: 'arn:aws:ecs:eu-west-1:111122223333:task/kiln-builds/task-one' }] });
    const { context } = awsContext.awsRuntime(`https://${DOMAIN}`);
    const batch = await dispatch.consumeRecords(context, [sqsRecord('m1', JSON.stringify({ jobId: job.id }), 1)], 5);
    const environment = ecsMock.commandCalls(RunTaskCommand)[0].args[0].input.overrides?.containerOverrides?.[0].environment ?? [];
    const jobToken = environment.find((variable) => variable.name === 'KILN_JOB_TOKEN')?.value ?? '';

    expect(batch).toEqual({ batchItemFailures: [] });
    expect(environment.find((variable) => variable.name === 'KILN_API_URL')?.value).toBe(`https://${DOMAIN}`);

    const claimed = await call(
      httpEvent('POST', '/runner/v1/claim', {
        body: JSON.stringify({ protocol: 1, runner: 'task-one' }),
        headers: { authorization: `token ${jobToken}` },
      }),
    );
    const claim = JSON.parse(claimed.body ?? '{}') as { job: { id: number; url: string } };

    expect(claimed.statusCode).toBe(200);
    expect(claim.job.id).toBe(job.id);
    expect(claim.job.url).toBe(`https://${DOMAIN}/api/jobs/${job.id}`);
  });

  it('rejects a claim from another task', async () => {
    const submitted = await call(
      httpEvent('POST', '/api/jobs', { body: JSON.stringify({ manifest: MANIFEST }), headers: { authorization: `token ${token}` } }),
    );
    const job = JSON.parse(submitted.body ?? '{}') as { id: number };
    ecsMock.on(RunTaskCommand).resolves({ tasks: [{ taskArn: 'arn:aws:ecs:eu-west-1:111122223333:task/kiln-builds/task-two' }] });
    await dispatch.consumeRecords(awsContext.awsRuntime(`https://${DOMAIN}`).context, [sqsRecord('m2', JSON.stringify({ jobId: job.id }), 1)], 5);
    const environment = ecsMock.commandCalls(RunTaskCommand)[0].args[0].input.overrides?.containerOverrides?.[0].environment ?? [];
    const jobToken = environment.find((variable) => variable.name === 'KILN_JOB_TOKEN')?.value ?? '';

    const claimed = await call(
      httpEvent('POST', '/runner/v1/claim', {
        body: JSON.stringify({ protocol: 1, runner: 'task-intruder' }),
        headers: { authorization: `token ${jobToken}` },
      }),
    );

    expect(claimed.statusCode).toBe(401);
  });
  it('queues the triggers of a job it cancels', async () => {
    const manifest = `${MANIFEST}triggers:\n  - action: webhook\n    condition: always\n    url: https://hooks.example.org/kiln\n`;
    const submitted = await call(
      httpEvent('POST', '/api/jobs', { body: JSON.stringify({ manifest }), headers: { authorization: `token ${token}` } }),
    );
    const job = JSON.parse(submitted.body ?? '{}') as { id: number };
    sqsMock.resetHistory();

    const cancelled = await call(httpEvent('POST', `/api/jobs/${job.id}/cancel`, { headers: { authorization: `token ${token}` } }));

    expect(submitted.statusCode).toBe(200);
    expect(cancelled.statusCode).toBe(200);
    expect(sqsMock.commandCalls(SendMessageCommand).map((call) => call.args[0].input)).toEqual([
      { QueueUrl: TRIGGERS_QUEUE_URL, MessageBody: JSON.stringify({ jobId: job.id }), DelaySeconds: 0 },
    ]);
  });

  // The key is loaded once per process and a failed load is tried again, so the failure runs first.
  it('returns 503 when the key secret fails', async () => {
    secretsMock.on(GetSecretValueCommand).rejects(new Error('AccessDeniedException'));

    const response = await call(httpEvent('GET', '/api/webhooks/public-key'));

    expect(response.statusCode).toBe(503);
    expect(response.body).not.toContain(WEBHOOK_KEY_SECRET);
  });

  it('serves the public key from the secret', async () => {
    const secret = 'k'.repeat(30) + 'Q9'.repeat(17);
    secretsMock.on(GetSecretValueCommand).resolves({ SecretString: secret });

    const response = await call(httpEvent('GET', '/api/webhooks/public-key'));

    expect(response.statusCode).toBe(200);
    expect(response.body).toBe(keyPairFromSecret(secret, 'test').publicKeyBase64);
    expect(secretsMock.commandCalls(GetSecretValueCommand).map((call) => call.args[0].input)).toEqual([{ SecretId: WEBHOOK_KEY_SECRET }]);
  });
});
