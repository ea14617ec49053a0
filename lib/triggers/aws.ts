import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SESv2Client } from '@aws-sdk/client-sesv2';
import type { SQSClient } from '@aws-sdk/client-sqs';
import { parseCount, type Settings } from '../config.js';
import type { JobEndListener } from '../context.js';
import { SqsJobQueue } from '../queue/job-queue.js';
import { TRIGGER_DEFAULTS, type TriggerRuntime } from './actions.js';
import { SesMailer, SmtpMailer } from './mailers.js';
import { TriggerQueueListener } from './run-triggers.js';
import { systemResolver } from './webhook.js';
import { MissingWebhookKey, SecretsManagerWebhookKey, type WebhookKeySource } from './webhook-key.js';

/** Environment variables that the CDK construct of the triggers sets on the functions it binds. */
export const TRIGGER_ENV = {
  /** URL of the triggers queue, on every function that may end a job. */
  queueUrl: 'KILN_TRIGGERS_QUEUE_URL',
  /** Receives of a triggers message before SQS moves it to the dead-letter queue, on the triggers function. */
  maxReceives: 'KILN_TRIGGERS_QUEUE_MAX_RECEIVES',
  /** ARN of the Secrets Manager secret that the webhook signing key is derived from. */
  webhookKeySecret: 'KILN_WEBHOOK_KEY_SECRET',
} as const;

/** The triggers' part of a deployment, as a function reads it from its environment. A value is null where the function was not bound to it. */
export interface AwsTriggerConfig {
  queueUrl: string | null;
  webhookKeySecret: string | null;
}

export function readAwsTriggerConfig(env: NodeJS.ProcessEnv): AwsTriggerConfig {
  const read = (name: string) => env[name]?.trim() || null;

  return { queueUrl: read(TRIGGER_ENV.queueUrl), webhookKeySecret: read(TRIGGER_ENV.webhookKeySecret) };
}

/** Reads KILN_TRIGGERS_QUEUE_MAX_RECEIVES, or returns 5, the construct's default, when it is unset. */
export function readTriggerMaxReceives(env: NodeJS.ProcessEnv): number {
  const value = env[TRIGGER_ENV.maxReceives]?.trim();

  return value ? parseCount(TRIGGER_ENV.maxReceives, value) : 5;
}

/**
 * Builds the job end listener and the webhook key of an AWS service context.
 * A function that was not bound to the triggers queue or the key gets parts
 * that fail with the reason when used, which the caller logs.
 */
export function createAwsTriggerParts(
  config: AwsTriggerConfig,
  clients: { sqs: SQSClient; secretsManager: SecretsManagerClient },
): { jobEnd: JobEndListener; webhookKey: WebhookKeySource } {
  const jobEnd: JobEndListener =
    config.queueUrl === null
      ? {
          jobEnded: async (job) => {
            throw new Error(`${TRIGGER_ENV.queueUrl} is not set on this function, so the triggers of job ${job.id} were not queued`);
          },
        }
      : new TriggerQueueListener(new SqsJobQueue(clients.sqs, config.queueUrl));
  const webhookKey: WebhookKeySource =
    config.webhookKeySecret === null
      ? new MissingWebhookKey(`${TRIGGER_ENV.webhookKeySecret} is not set on this function, so it cannot read the webhook signing key`)
      : new SecretsManagerWebhookKey(clients.secretsManager, config.webhookKeySecret);

  return { jobEnd, webhookKey };
}

/** Builds the trigger runtime of the triggers function: SMTP when KILN_SMTP_URL is set, else Amazon SES. */
export function createAwsTriggerRuntime(settings: Settings, ses: SESv2Client = new SESv2Client({})): TriggerRuntime {
  return {
    mailer: settings.smtpUrl === null ? new SesMailer(ses) : new SmtpMailer(settings.smtpUrl),
    resolveHost: systemResolver,
    ...TRIGGER_DEFAULTS,
  };
}
