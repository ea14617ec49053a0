import { ArnFormat, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { Function as LambdaFunction } from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { parseEmailAddress } from '../lib/config.js';
import { TRIGGER_ENV } from '../lib/triggers/aws.js';
import { ServiceFunction } from './service-function.js';

/** Receives of a triggers message before SQS moves it to the dead-letter queue. */
export const TRIGGER_MAX_RECEIVES = 5;

/**
 * Timeout of the triggers function. One webhook takes at most three 10 s
 * attempts and 12 s of pauses, and the triggers of a message run in parallel.
 */
export const TRIGGER_FUNCTION_TIMEOUT = Duration.minutes(2);

export interface KilnTriggersProps {
  /** The service's table: jobs, groups and the record of which triggers were sent. */
  readonly table: dynamodb.ITable;
  /** The bucket of build logs; the function appends each webhook and email attempt to the setup log under `logs/`. */
  readonly bucket: s3.IBucket;
  /**
   * Environment variables that every Kiln function gets: the `KILN_*`
   * settings and the names of the table, bucket, job queue and cluster, and
   * KILN_PUBLIC_URL, which the links in webhooks and emails start with.
   */
  readonly environment: Record<string, string>;
  /**
   * From address of trigger email (KILN_EMAIL_FROM), such as `Kiln <ci@example.org>`,
   * sent through Amazon SES unless the environment sets KILN_SMTP_URL.
   * @default - email triggers are not sent, and the setup log states why
   */
  readonly emailFrom?: string;
  /**
   * The SES identity, a domain or an address verified in SES, that the function may send from.
   * @default - the domain of `emailFrom`
   */
  readonly emailIdentity?: string;
  /**
   * How long the function's log events are kept.
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
}

/**
 * The build triggers of a Kiln deployment: the triggers queue with its
 * dead-letter queue, the function that sends webhooks and emails, and the
 * Secrets Manager secret of the webhook signing key.
 *
 * The secret contains 64 random alphanumeric characters that Secrets
 * Manager generates at deploy time. The service derives the Ed25519 key from
 * them with HKDF-SHA256, so the key never appears in the template and stays
 * the same across deploys. The secret is retained when the stack is deleted and
 * is not rotated, because rotating it would change the public key that
 * webhook receivers check signatures with. An operator may replace its value
 * with an Ed25519 private key in PKCS#8 PEM.
 *
 * Bind every function that may end a job with {@link bindEnqueue}, and the
 * API function with {@link bindWebhookKey} too.
 */
export class KilnTriggers extends Construct {
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  readonly webhookKeySecret: secretsmanager.Secret;
  readonly service: ServiceFunction;
  readonly function: NodejsFunction;
  readonly role: iam.Role;

  constructor(scope: Construct, id: string, props: KilnTriggersProps) {
    super(scope, id);

    const emailFrom = props.emailFrom === undefined ? undefined : parseEmailAddress('emailFrom', props.emailFrom);
    const emailIdentity = props.emailIdentity ?? (emailFrom === undefined ? undefined : domainOf(emailFrom));

    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    // SQS event sources need a visibility timeout of at least six times the function's timeout.
    this.queue = new sqs.Queue(this, 'Queue', {
      visibilityTimeout: Duration.seconds(TRIGGER_FUNCTION_TIMEOUT.toSeconds() * 6),
      retentionPeriod: Duration.days(14),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: TRIGGER_MAX_RECEIVES },
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    this.webhookKeySecret = new secretsmanager.Secret(this, 'WebhookKey', {
      description: 'Kiln: the webhook signing key is derived from this value; changing it changes the public key',
      generateSecretString: { passwordLength: 64, excludePunctuation: true, includeSpace: false },
      removalPolicy: RemovalPolicy.RETAIN,
    });

    this.service = new ServiceFunction(this, 'Function', {
      entry: 'functions/run-triggers.ts',
      description: 'Kiln: sends the webhooks and emails of ended jobs',
      timeout: TRIGGER_FUNCTION_TIMEOUT,
      memorySize: 256,
      environment: {
        ...props.environment,
        [TRIGGER_ENV.maxReceives]: String(TRIGGER_MAX_RECEIVES),
        ...(emailFrom === undefined ? {} : { KILN_EMAIL_FROM: emailFrom }),
      },
      logRetention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
    });
    this.function = this.service.function;
    this.role = this.service.role;
    this.function.addEventSource(new SqsEventSource(this.queue, { batchSize: 10, reportBatchItemFailures: true, maxConcurrency: 5 }));

    this.grantFunction(props.table, props.bucket, emailFrom, emailIdentity);
    this.bindWebhookKey(this.function);
    this.acknowledgeFindings(props.bucket);
  }

  /** Lets `fn` queue the triggers of the jobs it ends: sets KILN_TRIGGERS_QUEUE_URL and grants sqs:SendMessage. */
  bindEnqueue(fn: LambdaFunction): void {
    fn.addEnvironment(TRIGGER_ENV.queueUrl, this.queue.queueUrl);
    fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [this.queue.queueArn] }));
  }

  /** Lets `fn` read the webhook signing key: sets KILN_WEBHOOK_KEY_SECRET and grants secretsmanager:GetSecretValue on the secret. */
  bindWebhookKey(fn: LambdaFunction): void {
    fn.addEnvironment(TRIGGER_ENV.webhookKeySecret, this.webhookKeySecret.secretArn);
    fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['secretsmanager:GetSecretValue'], resources: [this.webhookKeySecret.secretArn] }));
  }

  private grantFunction(table: dynamodb.ITable, bucket: s3.IBucket, emailFrom: string | undefined, emailIdentity: string | undefined): void {
    // Reads jobs and groups, claims and completes trigger runs, takes the setup log's lock, marks a group's triggers run.
    this.service.allow({
      actions: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
      resources: [table.tableArn],
    });

    // Appends each attempt to setup logs. Without ListBucket, S3 returns 403 instead of 404 for a missing log.
    this.service.allow({ actions: ['s3:GetObject', 's3:PutObject'], resources: [bucket.arnForObjects('logs/*')] });
    this.service.allow({
      actions: ['s3:ListBucket'],
      resources: [bucket.bucketArn],
      conditions: { StringLike: { 's3:prefix': ['logs/*'] } },
    });

    if (emailFrom !== undefined && emailIdentity !== undefined) {
      const identityArn = Stack.of(this).formatArn({
        service: 'ses',
        resource: 'identity',
        resourceName: emailIdentity,
        arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
      });
      // NOTE: in the SES sandbox each recipient must be a verified identity too, and SES may then check this
      // permission on the recipients' identities as well. Request production access before relying on email.
      this.service.allow({
        actions: ['ses:SendEmail', 'ses:SendRawEmail'],
        resources: [identityArn],
        conditions: { StringEquals: { 'ses:FromAddress': bareAddress(emailFrom) } },
      });
    }
  }

  private acknowledgeFindings(bucket: s3.IBucket): void {
    Validations.of(this.webhookKeySecret).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason: 'The secret is the seed of the webhook signing key; rotating it would change the public key that every webhook receiver checks.',
    });
    Validations.of(this.function).acknowledge({
      id: 'AwsSolutions-L1',
      reason: 'Pinned to Node.js 22, the version that the function bundles target. Move all functions together after testing on a newer version.',
    });
    Validations.of(this.role).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${flattenReference(Stack.of(this).resolve(bucket.arnForObjects('logs/*')))}]`,
      reason: 'Setup logs are stored under keys that contain job ids, which exist only at run time; the statement covers only the logs/ prefix.',
    });
  }
}

/**
 * Flattens a resolved CloudFormation value the way cdk-nag 3 names wildcard
 * findings: `Ref` becomes `<LogicalId>`, `Fn::GetAtt` becomes
 * `<LogicalId.Attribute>`, and `Fn::Join` joins its flattened parts.
 */
function flattenReference(value: unknown): string {
  if (typeof value === 'string') return value;

  const node = value as Record<string, unknown>;
  if (node['Fn::Join']) {
    const [delimiter, items] = node['Fn::Join'] as [string, unknown[]];
    return items.map(flattenReference).join(delimiter);
  }
  if (node['Fn::GetAtt']) {
    const [resource, attribute] = node['Fn::GetAtt'] as [string, string];
    return `<${resource}.${attribute}>`;
  }
  if (node.Ref) return `<${String(node.Ref)}>`;

  return JSON.stringify(value);
}

/** Returns the bare address of `Name <address>` or `address`. */
function bareAddress(from: string): string {
  return /<([^>]+)>\s*$/.exec(from)?.[1] ?? from;
}

function domainOf(from: string): string {
  const address = bareAddress(from);

  return address.slice(address.lastIndexOf('@') + 1);
}
