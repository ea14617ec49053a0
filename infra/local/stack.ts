import { CreateBucketCommand, HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createApp } from '../../lib/api/app.js';
import { createToken, SCOPES } from '../../lib/auth/tokens.js';
import { KilnError } from '../../lib/errors.js';
import { LOCAL_DEFAULTS, readSettings, type Settings } from '../../lib/config.js';
import type { ServiceContext } from '../../lib/context.js';
import { consumeJobMessage } from '../../lib/dispatch/consume.js';
import { reconcileJobs, recoverAfterRestart } from '../../lib/dispatch/reconcile.js';
import { finishJob } from '../../lib/jobs/lifecycle.js';
import { isFinal } from '../../lib/jobs/state.js';
import { setupLogKey, taskLogKey } from '../../lib/logs/log-store.js';
import type { JobStatus } from '../../lib/jobs/state.js';
import { LocalLauncher } from '../../lib/launchers/local-launcher.js';
import { logger as rootLogger, type Logger } from '../../lib/logger.js';
import { DynamoLogLock, LogStore } from '../../lib/logs/log-store.js';
import { createStores, ensureTable, type JobRecord } from '../../lib/store/index.js';
import { LOCAL_CREDENTIALS, LOCAL_REGION, startDynalite, startS3rver, type LocalServer } from './aws-local.js';
import { MemoryQueue } from './memory-queue.js';
import { createLocalTriggers, type LocalTriggerOptions, type LocalTriggers } from './triggers.js';
import { LocalKeyCipher } from '../../lib/secrets/cipher.js';

export const TABLE_NAME = 'kiln';
export const BUCKET_NAME = 'kiln-data';

/** How often the local stack looks for jobs past their deadline. */
const RECONCILE_INTERVAL_MS = 5_000;

export interface LocalStackOptions {
  dataDir: string;
  apiPort: number;
  s3Port: number;
  dynamodbPort: number;
  /** Settings; defaults to the process environment. */
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** Called after every job status change, for the console line of `npm start`. */
  onStatus?: (job: JobRecord, previous: JobStatus | null) => void;
  triggers?: LocalTriggerOptions;
}

export interface LocalStack {
  apiUrl: string;
  s3Endpoint: string;
  dynamodbEndpoint: string;
  context: ServiceContext;
  launcher: LocalLauncher;
  settings: Settings;
  /** The `local` user's token, also in `<dataDir>/token`. */
  token: string;
  /** Whether this start created the token. */
  tokenCreated: boolean;
  /** Jobs of an earlier run that this start failed or queued again. */
  recovered: { failed: number[]; requeued: number[] };
  triggers: LocalTriggers;
  close(): Promise<void>;
}

/**
 * Starts the whole service on this machine: dynalite for DynamoDB, s3rver
 * for S3, an in-process queue and runners as child processes, behind the
 * same API, dispatch and runner code that runs on AWS.
 */
export async function startLocalStack(options: LocalStackOptions): Promise<LocalStack> {
  const logger = options.logger ?? rootLogger;
  const settings = readSettings(options.env ?? process.env, LOCAL_DEFAULTS);
  const dataDir = path.resolve(options.dataDir);
  await mkdir(path.join(dataDir, 'dynamodb'), { recursive: true });
  await mkdir(path.join(dataDir, 's3'), { recursive: true });
  const releaseDataDir = await lockDataDir(dataDir);

  const started: Array<{ close(): Promise<void> }> = [{ close: releaseDataDir }];
  try {
    const dynamodb = await startDynalite({ port: options.dynamodbPort, path: path.join(dataDir, 'dynamodb') });
    started.push(dynamodb);
    const s3Server = await startS3rver({ port: options.s3Port, directory: path.join(dataDir, 's3') });
    started.push(s3Server);

    return await startServices(options, { dataDir, logger, settings, dynamodb, s3Server, started });
  } catch (error) {
    for (const server of started.reverse()) await server.close().catch(() => undefined);
    throw error;
  }
}

interface Parts {
  dataDir: string;
  logger: Logger;
  settings: Settings;
  dynamodb: LocalServer;
  s3Server: LocalServer;
  started: Array<{ close(): Promise<void> }>;
}

async function startServices(options: LocalStackOptions, parts: Parts): Promise<LocalStack> {
  const { dataDir, logger, settings } = parts;
  const clientConfig = { region: LOCAL_REGION, credentials: LOCAL_CREDENTIALS };
  const stores = createStores(TABLE_NAME, { ...clientConfig, endpoint: parts.dynamodb.endpoint });
  await ensureTable(stores.dynamodb, TABLE_NAME);
  const s3 = new S3Client({ ...clientConfig, endpoint: parts.s3Server.endpoint, forcePathStyle: true });
  await ensureBucket(s3, BUCKET_NAME);

  let app: ReturnType<typeof createApp> | null = null;
  const server = serve({
    fetch: (request) => (app ? app.fetch(request) : new Response('starting', { status: 503 })),
    port: options.apiPort,
    hostname: '127.0.0.1',
  });
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  parts.started.push({ close: () => new Promise<void>((resolve) => server.close(() => resolve())) });
  const apiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const queue = new MemoryQueue({ logger });
  const triggers = await createLocalTriggers(dataDir, settings, logger, options.triggers);
  let context: ServiceContext | null = null;
  const launcher = new LocalLauncher({
    apiUrl,
    dataDir,
    logger,
    onExit: (jobId, code, signal) => {
      if (context) void failJobOfExitedRunner(context, launcher, jobId, code, signal);
    },
  });
  context = {
    settings,
    stores,
    logs: new LogStore(s3, BUCKET_NAME, new DynamoLogLock(stores.locks)),
    queue,
    launcher,
    logger,
    secretCipher: await LocalKeyCipher.fromFile(path.join(dataDir, 'secret-key')),
    jobEnd: triggers.listener,
    webhookKey: triggers.webhookKey,
    publicUrl: apiUrl,
  };
  const serviceContext = context;
  if (options.onStatus) stores.jobs.on('status', options.onStatus);

  await launcher.killLeftovers();
  const recovered = await recoverAfterRestart(serviceContext, {
    beforeFail: (job) => uploadLeftoverLogs(serviceContext, launcher, job),
  });
  queue.consume((body, delivery) => consumeJobMessage(serviceContext, body, delivery));
  triggers.start(serviceContext);
  app = createApp(serviceContext);

  const { token, created } = await ensureLocalToken(serviceContext, dataDir);
  const reconciler = setInterval(() => {
    reconcileJobs(serviceContext).catch((error: unknown) => logger.error({ err: error }, 'reconcile failed'));
  }, RECONCILE_INTERVAL_MS);
  logger.info({ apiUrl, dataDir }, 'local stack started');

  return {
    apiUrl,
    s3Endpoint: parts.s3Server.endpoint,
    dynamodbEndpoint: parts.dynamodb.endpoint,
    context: serviceContext,
    launcher,
    settings,
    token,
    tokenCreated: created,
    recovered,
    triggers,
    close: async () => {
      clearInterval(reconciler);
      await queue.close();
      await launcher.stopAll('the local stack is shutting down');
      await triggers.close();
      for (const part of parts.started.reverse()) await part.close();
      logger.info('local stack stopped');
    },
  };
}

/** Raised when another running local stack uses the data folder. */
export class DataDirInUseError extends KilnError {
  override name = 'DataDirInUseError';
}

/**
 * Takes the data folder for this process with a pid file, because two local
 * stacks on one folder would corrupt dynalite's database. A pid file whose
 * process is gone is taken over. Returns the function that releases it.
 */
async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const lockFile = path.join(dataDir, 'kiln.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(lockFile, String(process.pid), { flag: 'wx' });
      return () => rm(lockFile, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }

    const holder = Number((await readFile(lockFile, 'utf8').catch(() => '')).trim());
    if (Number.isInteger(holder) && holder > 0 && isAlive(holder)) {
      throw new DataDirInUseError(
        `the data folder ${dataDir} is in use by another Kiln (pid ${holder}); stop that one, or set KILN_DATA_DIR to another folder`,
      );
    }
    await rm(lockFile, { force: true });
  }

  throw new DataDirInUseError(`failed to lock the data folder ${dataDir}: another Kiln is starting on it`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function ensureBucket(s3: S3Client, bucket: string): Promise<void> {
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  }
}

/** Reads the `local` user's token from the data folder, creating it on first start. */
async function ensureLocalToken(context: ServiceContext, dataDir: string): Promise<{ token: string; created: boolean }> {
  const tokenFile = path.join(dataDir, 'token');
  const existing = (await readFile(tokenFile, 'utf8').catch(() => '')).trim();
  if (existing !== '') return { token: existing, created: false };

  const { token } = await createToken(context.stores.tokens, { user: 'local', scopes: [...SCOPES] });
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  await chmod(tokenFile, 0o600);

  return { token, created: true };
}

/** Fails the job of a runner that exited before reporting the job's end, with the exit in the setup log. */
async function failJobOfExitedRunner(
  context: ServiceContext,
  launcher: LocalLauncher,
  jobId: number,
  code: number | null,
  signal: NodeJS.Signals | null,
): Promise<void> {
  const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
  const reason = `The build's runner ${how} before it reported the job's end; see the messages above`;
  try {
    const job = await context.stores.jobs.find(jobId);
    if (!job || isFinal(job.status)) return;

    await uploadLeftoverLogs(context, launcher, job);
    await finishJob(context, jobId, 'failed', { reason });
  } catch (error) {
    context.logger.error({ err: error, jobId }, 'failed to fail the job of an exited runner');
  }
}

/**
 * Uploads the logs that a runner kept on disk but may not have uploaded
 * before it died, so the output up to its end is kept. The runner wrote
 * them already masked and capped.
 */
async function uploadLeftoverLogs(context: ServiceContext, launcher: LocalLauncher, job: JobRecord): Promise<void> {
  const folder = path.join(launcher.stateDir(job.id), 'logs');
  const files: Array<[string, string]> = [['setup.log', setupLogKey(job.id)]];
  job.tasks.forEach((task, index) => files.push([`task-${index + 1}.log`, taskLogKey(job.id, task.name)]));

  for (const [file, key] of files) {
    const body = await readFile(path.join(folder, file)).catch(() => null);
    if (body === null) continue;

    await context.logs.put(key, body).catch((error: unknown) => {
      context.logger.error({ err: error, jobId: job.id, key }, 'failed to upload a leftover log');
    });
  }
}
