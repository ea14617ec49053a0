import type { Settings } from './config.js';
import type { Launcher } from './launchers/launcher.js';
import type { Logger } from './logger.js';
import type { LogStore } from './logs/log-store.js';
import type { JobQueue } from './queue/job-queue.js';
import type { SecretCipher } from './secrets/cipher.js';
import type { JobRecord, Stores } from './store/index.js';
import type { WebhookKeySource } from './triggers/webhook-key.js';

/** Receives every job that has just ended, once per job; triggers run from here. */
export interface JobEndListener {
  jobEnded(job: JobRecord): Promise<void>;
}

/** Everything the handlers use, built once per process by the local stack or a Lambda entry point. */
export interface ServiceContext {
  settings: Settings;
  stores: Stores;
  logs: LogStore;
  queue: JobQueue;
  launcher: Launcher;
  logger: Logger;
  /** Encrypts secrets at rest: a key file locally, KMS on AWS. */
  secretCipher: SecretCipher;
  /** Told about each job that ends; errors it throws are logged, never passed on. */
  jobEnd: JobEndListener;
  /**
   * The Ed25519 key pair that signs webhook bodies; `GET /api/webhooks/public-key` serves its public half.
   * On AWS, a function that is not bound to the key's secret gets a source whose every load fails.
   */
  webhookKey: WebhookKeySource;
  /** The API's public base URL without a trailing slash, such as `http://127.0.0.1:8080`. */
  publicUrl: string;
}
