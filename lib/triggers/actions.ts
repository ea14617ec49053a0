import { setTimeout as sleep } from 'node:timers/promises';
import type { ServiceContext } from '../context.js';
import type { Logger } from '../logger.js';
import { setupLogKey } from '../logs/log-store.js';
import type { Trigger } from '../manifest/types.js';
import type { JobRecord } from '../store/index.js';
import { EmailRejectedError, type TriggerEmail } from './email.js';
import type { Mailer } from './mailers.js';
import { deliverWebhook, describeUrl, type AttemptOutcome, type HostResolver } from './webhook.js';
import { signWebhookBody } from './webhook-key.js';

/** Dependencies of the trigger runner beyond the service context, which differ between the local stack and AWS. */
export interface TriggerRuntime {
  mailer: Mailer;
  resolveHost: HostResolver;
  /** Pauses before the second and third webhook or email attempt, in ms. */
  retryDelaysMs: readonly number[];
  /** Limit of one webhook attempt, in ms. */
  webhookTimeoutMs: number;
  /** How long a claimed trigger stays claimed, in ms; it must outlast every attempt with its pauses. */
  leaseMs: number;
}

/** Defaults for {@link TriggerRuntime}: three attempts, 2 s and 10 s apart, 10 s each. */
export const TRIGGER_DEFAULTS = {
  retryDelaysMs: [2_000, 10_000],
  webhookTimeoutMs: 10_000,
  leaseMs: 5 * 60_000,
} as const;

/** Target of a trigger: one job, or a job group whose jobs have all ended. */
export interface TriggerTarget {
  /** Name of the target in setup log lines, such as `Job group #4`. It is empty for a job, because the log is the job's own. */
  label: string;
  /** The jobs whose setup logs record each attempt. */
  jobs: readonly JobRecord[];
  /** The JSON body of a webhook. */
  payload: unknown;
  /** Builds the email to send to a trigger's recipients; `key` names the trigger within its job or group. */
  email(trigger: Extract<Trigger, { action: 'email' }>, key: string): Omit<TriggerEmail, 'from'>;
}

/**
 * Appends a line to the setup log of each job that has one. A failed append
 * is logged and dropped, because the trigger was sent and a retry would
 * send it again.
 */
export async function appendToSetupLogs(context: ServiceContext, log: Logger, jobs: readonly JobRecord[], line: string): Promise<void> {
  for (const job of jobs) {
    if (job.runner === null) continue;

    await context.logs.append(setupLogKey(job.id), `[kiln] ${line}`).catch((error: unknown) => {
      log.error({ err: error, jobId: job.id }, 'failed to append a trigger note to the setup log');
    });
  }
}

function describeOutcome(outcome: AttemptOutcome): string {
  if (outcome.kind === 'delivered') return `delivered, HTTP ${outcome.status}`;
  if (outcome.kind === 'rejected') return `not sent: ${outcome.reason}`;

  return `failed: ${outcome.reason}`;
}

/** Names a trigger's action for the setup log: `Webhook`, or `Job group #4 webhook` for a group's. */
function actionName(target: TriggerTarget, action: 'webhook' | 'email'): string {
  if (target.label === '') return action === 'webhook' ? 'Webhook' : 'Email';

  return `${target.label} ${action}`;
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

/**
 * POSTs the target's payload to the trigger's URL, signed with the webhook
 * key, and notes every attempt in the setup logs. Returns the outcome to
 * record. Throws only when the signing key cannot be loaded, so nothing was sent.
 */
export async function runWebhookTrigger(
  context: ServiceContext,
  runtime: TriggerRuntime,
  target: TriggerTarget,
  trigger: Extract<Trigger, { action: 'webhook' }>,
  log: Logger,
): Promise<string> {
  const name = `${actionName(target, 'webhook')} ${describeUrl(trigger.url)} (on ${trigger.condition})`;
  const { privateKey } = await context.webhookKey.keyPair();
  const body = Buffer.from(JSON.stringify(target.payload), 'utf8');

  const outcome = await deliverWebhook(trigger.url, body, {
    resolveHost: runtime.resolveHost,
    allowPrivate: context.settings.webhookAllowPrivate,
    timeoutMs: runtime.webhookTimeoutMs,
    retryDelaysMs: runtime.retryDelaysMs,
    headers: () => {
      const { nonce, signature } = signWebhookBody(privateKey, body);
      return {
        'content-type': 'application/json',
        'user-agent': 'Kiln webhook',
        'x-payload-nonce': nonce,
        'x-payload-signature': signature,
      };
    },
    onAttempt: async (attempt, attempts, result) => {
      const retryIn = result.kind === 'failed' && result.retry && attempt < attempts ? runtime.retryDelaysMs[attempt - 1] : null;
      const next = retryIn === null ? '' : `; trying again in ${seconds(retryIn)}`;
      const line = result.kind === 'rejected' ? `${name} ${describeOutcome(result)}` : `${name}, attempt ${attempt} of ${attempts}: ${describeOutcome(result)}${next}`;
      log[result.kind === 'delivered' ? 'info' : 'warn']({ url: describeUrl(trigger.url), attempt, outcome: result }, 'webhook attempt');
      await appendToSetupLogs(context, log, target.jobs, line);
    },
  });

  return describeOutcome(outcome);
}

/**
 * Decides whether sending the email again may succeed: not after a rejection
 * or a permanent SMTP reply, and not after an AWS SDK error, because the SDK
 * retried that already.
 */
function isTransientMailError(error: unknown): boolean {
  if (error instanceof EmailRejectedError) return false;
  const { responseCode, $metadata } = error as { responseCode?: unknown; $metadata?: unknown };
  if (typeof responseCode === 'number') return responseCode < 500;

  return $metadata === undefined;
}

/** Sends the target's email to the trigger's recipients and notes the outcome in the setup logs. Returns the outcome to record. */
export async function runEmailTrigger(
  context: ServiceContext,
  runtime: TriggerRuntime,
  target: TriggerTarget,
  trigger: Extract<Trigger, { action: 'email' }>,
  key: string,
  log: Logger,
): Promise<string> {
  const copy = trigger.cc ? `, cc ${trigger.cc}` : '';
  const name = `${actionName(target, 'email')} to ${trigger.to}${copy} (on ${trigger.condition})`;
  const from = context.settings.emailFrom;
  if (from === null) {
    const outcome = 'not sent: KILN_EMAIL_FROM is not set; set it to an address that may send email, such as one verified in SES';
    log.warn({ trigger: trigger.condition }, 'email trigger without KILN_EMAIL_FROM');
    await appendToSetupLogs(context, log, target.jobs, `${name} ${outcome}`);
    return outcome;
  }

  const email: TriggerEmail = { ...target.email(trigger, key), from };
  const attempts = runtime.retryDelaysMs.length + 1;
  for (let attempt = 1; ; attempt++) {
    try {
      const sent = await runtime.mailer.send(email);
      log.info({ attempt, messageId: email.messageId }, 'trigger email sent');
      await appendToSetupLogs(context, log, target.jobs, `${name}: ${sent}`);
      return `sent: ${sent}`;
    } catch (error) {
      const retry = attempt < attempts && isTransientMailError(error);
      const reason = (error as Error).message;
      log.warn({ err: error, attempt }, 'trigger email failed');
      const next = retry ? `; trying again in ${seconds(runtime.retryDelaysMs[attempt - 1])}` : '';
      const verb = error instanceof EmailRejectedError ? 'not sent' : `attempt ${attempt} of ${attempts} failed`;
      await appendToSetupLogs(context, log, target.jobs, `${name} ${verb}: ${reason}${next}`);
      if (!retry) return `failed: ${reason}`;
    }

    await sleep(runtime.retryDelaysMs[attempt - 1]);
  }
}
