import path from 'node:path';
import type { Settings } from '../../lib/config.js';
import type { ServiceContext } from '../../lib/context.js';
import type { Logger } from '../../lib/logger.js';
import { TRIGGER_DEFAULTS, type TriggerRuntime } from '../../lib/triggers/actions.js';
import { EmlFolderMailer, SmtpMailer } from '../../lib/triggers/mailers.js';
import { consumeTriggerMessage, TriggerQueueListener } from '../../lib/triggers/run-triggers.js';
import { systemResolver, type HostResolver } from '../../lib/triggers/webhook.js';
import { FileWebhookKey } from '../../lib/triggers/webhook-key.js';
import { MemoryQueue } from './memory-queue.js';

/** Changes to how the local stack runs triggers, for tests. */
export interface LocalTriggerOptions {
  /** Resolves webhook host names; defaults to the system resolver. */
  resolveHost?: HostResolver;
  /** Pauses before the second and third attempt, in ms. */
  retryDelaysMs?: readonly number[];
}

/** The local stack's triggers: an in-process queue in place of the SQS triggers queue, and its consumer. */
export interface LocalTriggers {
  queue: MemoryQueue;
  listener: TriggerQueueListener;
  webhookKey: FileWebhookKey;
  runtime: TriggerRuntime;
  /** Starts consuming the queue with `context`. */
  start(context: ServiceContext): void;
  /** Waits for the trigger runs under way and stops. */
  close(): Promise<void>;
}

/**
 * Sets up triggers for the local stack. The webhook key lives in
 * `<dataDir>/webhook-key`, created on first start with mode 600. Email goes
 * through KILN_SMTP_URL when set, or else into `<dataDir>/mail/` as .eml files.
 */
export async function createLocalTriggers(
  dataDir: string,
  settings: Settings,
  logger: Logger,
  options: LocalTriggerOptions = {},
): Promise<LocalTriggers> {
  const webhookKey = new FileWebhookKey(path.join(dataDir, 'webhook-key'));
  await webhookKey.keyPair();

  const smtp = settings.smtpUrl === null ? null : new SmtpMailer(settings.smtpUrl);
  const queue = new MemoryQueue({ logger });
  const runtime: TriggerRuntime = {
    mailer: smtp ?? new EmlFolderMailer(path.join(dataDir, 'mail')),
    resolveHost: options.resolveHost ?? systemResolver,
    retryDelaysMs: options.retryDelaysMs ?? TRIGGER_DEFAULTS.retryDelaysMs,
    webhookTimeoutMs: TRIGGER_DEFAULTS.webhookTimeoutMs,
    leaseMs: TRIGGER_DEFAULTS.leaseMs,
  };

  return {
    queue,
    listener: new TriggerQueueListener(queue),
    webhookKey,
    runtime,
    start: (context) => queue.consume((body, delivery) => consumeTriggerMessage(context, runtime, body, delivery)),
    close: async () => {
      // NOTE: messages still waiting in the in-process queue are lost here, so the triggers of a job
      // that ends while the local stack stops may not run. On AWS the SQS queue keeps them.
      await queue.close();
      smtp?.close();
    },
  };
}
