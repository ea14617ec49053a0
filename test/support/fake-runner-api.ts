import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, NoSuchKey, NotFound, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { serve, type ServerType } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import { LOCAL_CREDENTIALS, LOCAL_REGION, startS3rver, type LocalServer } from '../../infra/local/aws-local.js';
import {
  MAX_ARTIFACT_BYTES,
  RUNNER_PROTOCOL_VERSION,
  type ArtifactUploadedRequest,
  type ArtifactUrlRequest,
  type ClaimedJob,
  type ClaimedTask,
  type CompleteRequest,
  type LogUrlRequest,
  type RunnerSecret,
  type RunnerTaskStatus,
} from '../../lib/runner/protocol.js';

const BUCKET = 'kiln-runner-test';
const LOG_CONTENT_TYPE = 'text/plain; charset=utf-8';
const ARTIFACT_CONTENT_TYPE = 'application/octet-stream';

/** Task moves that the service accepts; the fake rejects any other with 400 and records a violation. */
const TASK_MOVES: Record<RunnerTaskStatus | 'pending', readonly RunnerTaskStatus[]> = {
  pending: ['running', 'skipped'],
  running: ['success', 'failed'],
  success: [],
  failed: [],
  skipped: [],
};

export interface FakeRunnerApiOptions {
  /** Fields of the claimed job; `tasks` is required, the rest has defaults. */
  job: Partial<ClaimedJob> & { tasks: ClaimedTask[] };
  /** Milliseconds from the claim to the deadline; 10 minutes when left out. */
  deadlineAfterMs?: number;
  /** Lifetime of presigned PUT URLs in seconds; 15 minutes when left out. */
  urlLifetimeSeconds?: number;
  /** Returns true to reject this task update with 409 and end the job, as a cancel does. */
  conflictOnTaskUpdate?: (task: string, status: RunnerTaskStatus) => boolean;
  /** Called with each accepted task update, for timing it. */
  onTaskUpdate?: (task: string, status: RunnerTaskStatus) => void;
  /** The secrets that `POST .../secrets` returns; none when left out. */
  secrets?: RunnerSecret[];
  /** Returns 404 for `POST .../secrets`, as a service without the route does. */
  withoutSecretsRoute?: boolean;
}

export interface FakeRunnerApi {
  /** Base URL for KILN_API_URL. */
  url: string;
  jobId: number;
  /** The one-time token for KILN_JOB_TOKEN. */
  jobToken: string;
  /** The session token handed out by the claim, once claimed. */
  sessionToken: string | null;
  /** Every accepted task update, in order. */
  taskUpdates: Array<{ task: string; status: RunnerTaskStatus }>;
  /** The accepted complete request, or null. */
  completion: CompleteRequest | null;
  /** Protocol errors of the runner: bad tokens, backward task moves, calls after the end. Tests expect none. */
  violations: string[];
  /** The job's deadline as sent in the claim. */
  deadline: string | null;
  /** How many times the runner requested the secrets. */
  secretsRequests: number;
  /** Every accepted `POST .../artifacts` request, in order. */
  artifactRequests: ArtifactUrlRequest[];
  /** Artifacts whose upload the runner reported and the fake verified, in order. */
  uploadedArtifacts: ArtifactUrlRequest[];
  /** Reads an artifact's object from s3rver; returns null when nothing was uploaded for it. */
  readArtifact(path: string): Promise<Buffer | null>;
  /** The current status of a task, as the service would store it. */
  taskStatus(task: string): RunnerTaskStatus | 'pending';
  /** Reads a log object from s3rver; returns null when the runner never uploaded it. */
  readLog(request: LogUrlRequest): Promise<Buffer | null>;
  close(): Promise<void>;
}

/**
 * Starts an s3rver and a Hono app on 127.0.0.1 ephemeral ports that
 * implement the runner protocol for one job, handing out presigned PUT URLs
 * of the s3rver the same way the service does.
 */
export async function startFakeRunnerApi(options: FakeRunnerApiOptions): Promise<FakeRunnerApi> {
  const s3Directory = await mkdtemp(path.join(os.tmpdir(), 'kiln-fake-s3-'));
  const s3Server: LocalServer = await startS3rver({ port: 0, directory: s3Directory });
  const s3 = new S3Client({
    endpoint: s3Server.endpoint,
    region: LOCAL_REGION,
    credentials: LOCAL_CREDENTIALS,
    forcePathStyle: true,
  });
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));

  const jobId = options.job.id ?? 42;
  const jobToken = `kilnjob_${randomBytes(16).toString('hex')}`;
  const statuses = new Map<string, RunnerTaskStatus | 'pending'>(options.job.tasks.map((task) => [task.name, 'pending']));
  let claimed = false;
  let ended = false;
  let baseUrl = '';

  const logKey = (request: LogUrlRequest): string =>
    request.log === 'setup' ? `logs/${jobId}/setup.log` : `logs/${jobId}/tasks/${request.task}.log`;
  /** Object keys by artifact path. Keys are numbered, because a path may contain `..` or `~`. */
  const artifactKeys = new Map<string, string>();
  const readObject = async (key: string): Promise<Buffer | null> => {
    try {
      const object = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
      return Buffer.from((await object.Body?.transformToByteArray()) ?? new Uint8Array());
    } catch (error) {
      if (error instanceof NoSuchKey) {
        return null;
      }
      throw error;
    }
  };

  const state: FakeRunnerApi = {
    url: '',
    jobId,
    jobToken,
    sessionToken: null,
    taskUpdates: [],
    completion: null,
    violations: [],
    deadline: null,
    secretsRequests: 0,
    artifactRequests: [],
    uploadedArtifacts: [],
    readArtifact: async (artifactPath) => {
      const key = artifactKeys.get(artifactPath);
      return key === undefined ? null : readObject(key);
    },
    taskStatus: (task) => statuses.get(task) ?? 'pending',
    readLog: (request) => readObject(logKey(request)),
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      s3.destroy();
      await s3Server.close();
      await rm(s3Directory, { recursive: true, force: true });
    },
  };

  const reject = (c: Context, status: 400 | 401 | 404 | 409, reason: string, violation: boolean): Response => {
    if (violation) {
      state.violations.push(`${c.req.method} ${c.req.path}: ${reason}`);
    }
    return c.json({ errors: [{ reason }] }, status);
  };
  const bearer = (c: Context): string | null => /^token (.+)$/.exec(c.req.header('authorization') ?? '')?.[1] ?? null;

  /** Checks the session token and the job id; returns an error response, or null when the request may go on. */
  const checkSession = (c: Context): Response | null => {
    if (c.req.param('id') !== String(jobId)) {
      return reject(c, 404, `job ${c.req.param('id')} not found`, true);
    }
    if (ended) {
      return reject(c, 409, `job ${jobId} has ended`, false);
    }
    if (state.sessionToken === null || bearer(c) !== state.sessionToken) {
      return reject(c, 401, 'invalid session token', true);
    }
    return null;
  };

  const app = new Hono();

  app.post('/runner/v1/claim', async (c) => {
    const body = (await c.req.json()) as { protocol?: unknown };
    if (body.protocol !== RUNNER_PROTOCOL_VERSION) {
      return reject(c, 400, `unsupported protocol ${String(body.protocol)}`, true);
    }
    if (claimed || bearer(c) !== jobToken) {
      return reject(c, 401, 'invalid job token', true);
    }
    claimed = true;
    state.sessionToken = `kilnrun_${randomBytes(16).toString('hex')}`;
    state.deadline = new Date(Date.now() + (options.deadlineAfterMs ?? 10 * 60_000)).toISOString();
    const job: ClaimedJob = {
      id: jobId,
      url: `${baseUrl}/api/jobs/${jobId}`,
      image: 'debian/stable',
      arch: 'x86_64',
      packages: [],
      repositories: {},
      sources: [],
      environment: {},
      shell: false,
      artifacts: [],
      logMaxBytes: 10 * 1024 * 1024,
      ...options.job,
      deadline: state.deadline,
    };
    return c.json({ protocol: RUNNER_PROTOCOL_VERSION, sessionToken: state.sessionToken, job });
  });

  app.post('/runner/v1/jobs/:id/log-url', async (c) => {
    const failure = checkSession(c);
    if (failure) {
      return failure;
    }
    const request = (await c.req.json()) as LogUrlRequest;
    if (request.log !== 'setup' && !(request.log === 'task' && statuses.has(request.task))) {
      return reject(c, 400, `invalid log request ${JSON.stringify(request)}`, true);
    }
    const lifetime = options.urlLifetimeSeconds ?? 15 * 60;
    const url = await getSignedUrl(
      s3,
      new PutObjectCommand({ Bucket: BUCKET, Key: logKey(request), ContentType: LOG_CONTENT_TYPE }),
      { expiresIn: lifetime, signableHeaders: new Set(['content-type']) },
    );
    return c.json({
      url,
      headers: { 'content-type': LOG_CONTENT_TYPE },
      expiresAt: new Date(Date.now() + lifetime * 1000).toISOString(),
    });
  });

  app.post('/runner/v1/jobs/:id/tasks/:name', async (c) => {
    const failure = checkSession(c);
    if (failure) {
      return failure;
    }
    const task = c.req.param('name');
    const { status } = (await c.req.json()) as { status: RunnerTaskStatus };
    const from = statuses.get(task);
    if (from === undefined) {
      return reject(c, 404, `no task named ${task}`, true);
    }
    if (options.conflictOnTaskUpdate?.(task, status)) {
      ended = true;
      return reject(c, 409, `job ${jobId} has ended (cancelled)`, false);
    }
    if (from !== status && !TASK_MOVES[from].includes(status)) {
      return reject(c, 400, `task ${task} cannot move from ${from} to ${status}`, true);
    }
    statuses.set(task, status);
    state.taskUpdates.push({ task, status });
    options.onTaskUpdate?.(task, status);
    return c.json({});
  });

  app.post('/runner/v1/jobs/:id/secrets', (c) => {
    if (options.withoutSecretsRoute) {
      return c.json({ errors: [{ reason: `No route for POST ${c.req.path}` }] }, 404);
    }
    const failure = checkSession(c);
    if (failure) {
      return failure;
    }
    state.secretsRequests += 1;
    if ([...statuses.values()].some((status) => status !== 'pending')) {
      return reject(c, 409, `the secrets of job ${jobId} are handed out only before the first task starts`, true);
    }
    return c.json({ secrets: options.secrets ?? [] });
  });

  app.post('/runner/v1/jobs/:id/artifacts', async (c) => {
    const failure = checkSession(c);
    if (failure) {
      return failure;
    }
    const request = (await c.req.json()) as ArtifactUrlRequest;
    const listed = (options.job.artifacts ?? []).includes(request.path);
    if (!listed) {
      return reject(c, 400, `${JSON.stringify(request.path)} is not an artifact of job ${jobId}`, true);
    }
    if (!Number.isSafeInteger(request.size) || request.size < 0 || request.size > MAX_ARTIFACT_BYTES) {
      return reject(c, 400, `size ${JSON.stringify(request.size)} is not a number of bytes from 0 to ${MAX_ARTIFACT_BYTES}`, true);
    }
    if (artifactKeys.has(request.path)) {
      return reject(c, 400, `artifact ${request.path} was requested already`, true);
    }
    const unfinished = [...statuses].filter(([, status]) => status !== 'success' && status !== 'skipped');
    if (unfinished.length > 0) {
      return reject(c, 400, `artifacts are uploaded only after every task succeeded: ${unfinished.map(([name, status]) => `${name}=${status}`).join(', ')}`, true);
    }

    const key = `artifacts/${jobId}/${artifactKeys.size + 1}`;
    artifactKeys.set(request.path, key);
    state.artifactRequests.push(request);
    const lifetime = options.urlLifetimeSeconds ?? 15 * 60;
    const url = await getSignedUrl(
      s3,
      new PutObjectCommand({ Bucket: BUCKET, Key: key, ContentType: ARTIFACT_CONTENT_TYPE, ContentLength: request.size }),
      { expiresIn: lifetime, signableHeaders: new Set(['content-type', 'content-length']) },
    );
    return c.json({
      url,
      headers: { 'content-type': ARTIFACT_CONTENT_TYPE },
      expiresAt: new Date(Date.now() + lifetime * 1000).toISOString(),
    });
  });

  app.post('/runner/v1/jobs/:id/artifacts/uploaded', async (c) => {
    const failure = checkSession(c);
    if (failure) {
      return failure;
    }
    const { path: artifactPath } = (await c.req.json()) as ArtifactUploadedRequest;
    const key = artifactKeys.get(artifactPath);
    const requested = state.artifactRequests.find((request) => request.path === artifactPath);
    if (key === undefined || requested === undefined) {
      return reject(c, 400, `artifact ${JSON.stringify(artifactPath)} was never requested`, true);
    }
    let size: number | undefined;
    try {
      size = (await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }))).ContentLength;
    } catch (error) {
      if (!(error instanceof NotFound)) {
        throw error;
      }
    }
    if (size !== requested.size) {
      return reject(c, 400, `artifact ${artifactPath} has ${size ?? 'no'} bytes in S3, not the ${requested.size} requested`, true);
    }
    state.uploadedArtifacts.push(requested);
    return c.json({});
  });

  app.post('/runner/v1/jobs/:id/complete', async (c) => {
    const failure = checkSession(c);
    if (failure) {
      return failure;
    }
    const request = (await c.req.json()) as CompleteRequest;
    const unfinished = [...statuses].filter(([, status]) => status === 'pending' || status === 'running');
    if (unfinished.length > 0) {
      state.violations.push(`complete with unfinished tasks: ${unfinished.map(([name, status]) => `${name}=${status}`).join(', ')}`);
    }
    state.completion = request;
    ended = true;
    return c.json({});
  });

  const server: ServerType = await new Promise((resolve) => {
    const started = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(started));
  });
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.url = baseUrl;
  return state;
}

/** Path of the runner's entry point. */
export const RUNNER_MAIN = fileURLToPath(new URL('../../lib/runner/main.ts', import.meta.url));
const REPOSITORY_ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface RunnerProcess {
  /** The runner's pid, for sending it signals. */
  pid: number;
  /** Resolves when the runner exits. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

export interface RunnerFolders {
  home: string;
  stateDir: string;
  /** Deletes both folders. */
  remove(): Promise<void>;
}

/** Creates a temporary build HOME and runner state folder. */
export async function makeRunnerFolders(): Promise<RunnerFolders> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'kiln-runner-test-'));
  return {
    home: path.join(root, 'home'),
    stateDir: path.join(root, 'state'),
    remove: () => rm(root, { recursive: true, force: true }),
  };
}

/**
 * Starts the real runner (`node --import tsx lib/runner/main.ts`) against a
 * fake API. `extraEnv` adds variables to the runner's own environment, and
 * `detached` starts it in a process group of its own, as the local launcher does.
 */
export function startRunner(
  api: FakeRunnerApi,
  folders: RunnerFolders,
  extraEnv: Record<string, string> = {},
  options: { detached?: boolean } = {},
): RunnerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', RUNNER_MAIN], {
    cwd: REPOSITORY_ROOT,
    detached: options.detached ?? false,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      KILN_API_URL: api.url,
      KILN_JOB_ID: String(api.jobId),
      KILN_JOB_TOKEN: api.jobToken,
      KILN_BUILD_HOME: folders.home,
      KILN_RUNNER_STATE_DIR: folders.stateDir,
      ...extraEnv,
    },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => {
    stderr += text;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal, stderr }));
  });
  if (child.pid === undefined) {
    throw new Error('failed to start the runner process');
  }
  return { pid: child.pid, exited };
}

/** Runs the runner to its end and returns its exit code and stderr. */
export function runRunner(
  api: FakeRunnerApi,
  folders: RunnerFolders,
  extraEnv: Record<string, string> = {},
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return startRunner(api, folders, extraEnv).exited;
}
