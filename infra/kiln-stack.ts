import { App, CfnOutput, Stack, type Environment, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { SettingError } from '../lib/config.js';
import { normalizeArchitecture, type Architecture } from '../lib/manifest/images.js';
import { Kiln, type KilnProps } from './kiln.js';

/**
 * CDK context keys of the stack's settings and the Kiln prop each one sets.
 * Pass them as `cdk deploy -c KILN_MAX_RUNNING=50` or in cdk.json's `context`.
 */
export const CONTEXT_KEYS = {
  KILN_JOB_TIMEOUT: 'jobTimeout',
  KILN_LOG_LINK_TTL: 'logLinkTtl',
  KILN_LOG_MAX_BYTES: 'logMaxBytes',
  KILN_MAX_RUNNING: 'maxRunning',
  KILN_MAX_RUNNING_PER_USER: 'maxRunningPerUser',
  KILN_ANONYMOUS_READ: 'anonymousRead',
  KILN_WEBHOOK_ALLOW_PRIVATE: 'webhookAllowPrivate',
  KILN_SMTP_URL: 'smtpUrl',
  KILN_EMAIL_FROM: 'emailFrom',
  KILN_EMAIL_IDENTITY: 'emailIdentity',
  KILN_OAUTH_INTROSPECTION_URL: 'oauthIntrospectionUrl',
  KILN_RETENTION_DAYS: 'retentionDays',
  KILN_BUILD_CPU: 'buildCpu',
  KILN_BUILD_MEMORY: 'buildMemoryMiB',
  KILN_FARGATE_SPOT: 'fargateSpot',
  KILN_NAT: 'natGateway',
  KILN_DELETION_PROTECTION: 'deletionProtection',
  KILN_PUBLIC_URL: 'publicUrl',
  KILN_API_RATE_LIMIT: 'apiRateLimit',
  KILN_API_BURST_LIMIT: 'apiBurstLimit',
  KILN_IMAGES: 'images',
  KILN_ARCHITECTURES: 'architectures',
  KILN_RUNNER_IMAGE_VERSION: 'runnerImageVersion',
  KILN_TASK_FAMILY_PREFIX: 'taskFamilyPrefix',
} as const satisfies Record<string, keyof KilnProps>;

type ContextKey = keyof typeof CONTEXT_KEYS;

const NUMBER_KEYS: readonly ContextKey[] = [
  'KILN_MAX_RUNNING',
  'KILN_MAX_RUNNING_PER_USER',
  'KILN_RETENTION_DAYS',
  'KILN_BUILD_CPU',
  'KILN_BUILD_MEMORY',
  'KILN_API_RATE_LIMIT',
  'KILN_API_BURST_LIMIT',
];
const BOOLEAN_KEYS: readonly ContextKey[] = [
  'KILN_ANONYMOUS_READ',
  'KILN_WEBHOOK_ALLOW_PRIVATE',
  'KILN_FARGATE_SPOT',
  'KILN_NAT',
  'KILN_DELETION_PROTECTION',
];
const LIST_KEYS: readonly ContextKey[] = ['KILN_IMAGES', 'KILN_ARCHITECTURES'];

/**
 * Reads the Kiln props from CDK context. Values arrive as strings from
 * `-c KEY=value` and as JSON values from cdk.json; both are accepted. A key
 * that is absent keeps the prop's default. Throws SettingError on a value
 * that cannot be read.
 */
export function readKilnContext(read: (key: string) => unknown): KilnProps {
  const props: Record<string, unknown> = {};
  for (const [key, prop] of Object.entries(CONTEXT_KEYS) as Array<[ContextKey, keyof KilnProps]>) {
    const value = read(key);
    if (value === undefined || value === null || value === '') continue;

    if (NUMBER_KEYS.includes(key)) props[prop] = readNumber(key, value);
    else if (BOOLEAN_KEYS.includes(key)) props[prop] = readBoolean(key, value);
    else if (LIST_KEYS.includes(key)) props[prop] = readList(key, value);
    else props[prop] = String(value);
  }
  if (props.architectures !== undefined) props.architectures = readArchitectures(props.architectures as string[]);

  return props as KilnProps;
}

function readNumber(key: string, value: unknown): number {
  const number = typeof value === 'number' ? value : Number(String(value).trim());
  if (!Number.isFinite(number)) throw new SettingError(`${key}=${String(value)} is not a number`);

  return number;
}

function readBoolean(key: string, value: unknown): boolean {
  if (typeof value === 'boolean') return value;

  const text = String(value).trim().toLowerCase();
  if (text === 'true') return true;
  if (text === 'false') return false;
  throw new SettingError(`${key}=${String(value)} must be true or false`);
}

function readList(key: string, value: unknown): string[] {
  const items = Array.isArray(value) ? value.map(String) : String(value).split(',');
  const list = items.map((item) => item.trim()).filter((item) => item !== '');
  if (list.length === 0) throw new SettingError(`${key} is empty: list at least one value, separated by commas`);

  return list;
}

function readArchitectures(values: string[]): Architecture[] {
  return values.map((value) => {
    const arch = normalizeArchitecture(value);
    if (!arch) throw new SettingError(`KILN_ARCHITECTURES: "${value}" is not an architecture; use x86_64 or arm64`);

    return arch;
  });
}

/** The stack that `cdk deploy` deploys: one Kiln with its settings from CDK context, and its outputs. */
export class KilnStack extends Stack {
  readonly kiln: Kiln;

  constructor(scope: Construct, id: string, props: StackProps = {}) {
    super(scope, id, { description: 'Kiln: a build service that speaks the build.sr.ht API', ...props });

    this.kiln = new Kiln(this, 'Kiln', readKilnContext((key) => this.node.tryGetContext(key)));

    new CfnOutput(this, 'ApiUrl', { value: this.kiln.apiUrl, description: "Kiln's API base URL" });
    new CfnOutput(this, 'TableName', {
      value: this.kiln.table.tableName,
      description: 'DynamoDB table, for `npx kiln token create --table`',
    });
    new CfnOutput(this, 'BucketName', { value: this.kiln.bucket.bucketName, description: 'S3 bucket of build logs and artifacts' });
    new CfnOutput(this, 'ClusterName', { value: this.kiln.fleet.cluster.clusterName, description: 'ECS cluster that runs the builds' });
    new CfnOutput(this, 'WebhookKeySecretArn', {
      value: this.kiln.triggers.webhookKeySecret.secretArn,
      description: 'Secrets Manager secret that the webhook signing key is derived from',
    });
  }
}

/**
 * CDK feature flags of the app. Minimized policies merge the identical ECR
 * pull statements that each of the many runner images adds to the execution
 * role, which would otherwise overflow its inline policy.
 */
export const KILN_FEATURE_FLAGS: Readonly<Record<string, unknown>> = {
  '@aws-cdk/aws-iam:minimizePolicies': true,
};

export interface KilnAppOptions {
  /** Context values, such as `KILN_MAX_RUNNING`; the CDK CLI adds cdk.json's and `-c` values to these. */
  context?: Record<string, unknown>;
  /**
   * Account and region of the stack.
   * @default - CDK_DEFAULT_ACCOUNT and CDK_DEFAULT_REGION, which the CDK CLI sets,
   * else the `account` and `region` context values, else environment-agnostic
   */
  env?: Environment;
  /** Folder that the cloud assembly is written to; the CDK CLI sets it through CDK_OUTDIR. */
  outdir?: string;
}

/** Builds the app with one Kiln stack, named by the `KILN_STACK_NAME` context value or `Kiln`. */
export function createKilnApp(options: KilnAppOptions = {}): { app: App; stack: KilnStack } {
  const app = new App({ context: { ...KILN_FEATURE_FLAGS, ...options.context }, outdir: options.outdir });
  const context = (key: string): string | undefined => {
    const value = app.node.tryGetContext(key) as unknown;
    return typeof value === 'string' && value !== '' ? value : undefined;
  };
  const env = options.env ?? {
    account: process.env.CDK_DEFAULT_ACCOUNT ?? context('account'),
    region: process.env.CDK_DEFAULT_REGION ?? context('region'),
  };
  const stack = new KilnStack(app, context('KILN_STACK_NAME') ?? 'Kiln', { env });

  return { app, stack };
}
