import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { startLocalStack, type LocalStack, type LocalStackOptions } from '../../infra/local/stack.js';
import type { JobView } from '../../lib/api/job-view.js';

/** A local stack on ephemeral loopback ports in a temporary data folder, with a client for its API. */
export interface TestStack extends LocalStack {
  dataDir: string;
  /** Sends a request to the API with the `local` user's token unless `token` is given (null sends none). */
  api(method: string, route: string, options?: { body?: unknown; token?: string | null; headers?: Record<string, string> }): Promise<Response>;
  submit(body: Record<string, unknown>): Promise<JobView>;
  getJob(id: number): Promise<JobView>;
  /** Polls a job until `done` holds for it; fails after `timeoutMs`. */
  waitForJob(id: number, done: (job: JobView) => boolean, timeoutMs?: number): Promise<JobView>;
  /** Stops the stack and deletes its data folder. */
  destroy(): Promise<void>;
}

export const quietLogger = pino({ level: process.env.KILN_TEST_LOG_LEVEL ?? 'silent' });

export async function startTestStack(
  env: Record<string, string> = {},
  dataDir?: string,
  options: Pick<LocalStackOptions, 'triggers'> = {},
): Promise<TestStack> {
  const folder = dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'kiln-test-')));
  const stack = await startLocalStack({
    dataDir: folder,
    apiPort: 0,
    s3Port: 0,
    dynamodbPort: 0,
    env: { ...env },
    logger: quietLogger,
    ...options,
  });

  const api: TestStack['api'] = (method, route, options = {}) => {
    const token = options.token === undefined ? stack.token : options.token;
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (token !== null) headers.authorization ??= `token ${token}`;
    let body: string | undefined;
    if (typeof options.body === 'string') {
      body = options.body;
    } else if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] ??= 'application/json';
    }

    return fetch(`${stack.apiUrl}${route}`, { method, headers, body, redirect: 'manual' });
  };

  const getJob = async (id: number): Promise<JobView> => {
    const response = await api('GET', `/api/jobs/${id}`);
    if (response.status !== 200) throw new Error(`GET job ${id}: ${response.status} ${await response.text()}`);

    return (await response.json()) as JobView;
  };

  return {
    ...stack,
    dataDir: folder,
    api,
    getJob,
    submit: async (body) => {
      const response = await api('POST', '/api/jobs', { body });
      if (response.status !== 200) throw new Error(`submit: ${response.status} ${await response.text()}`);

      return (await response.json()) as JobView;
    },
    waitForJob: async (id, done, timeoutMs = 60_000) => {
      const giveUpAt = Date.now() + timeoutMs;
      for (;;) {
        const job = await getJob(id);
        if (done(job)) return job;
        if (Date.now() > giveUpAt) throw new Error(`job ${id} did not reach the expected state; last: ${JSON.stringify(job)}`);
        await sleep(200);
      }
    },
    destroy: async () => {
      await stack.close();
      if (!dataDir) await rm(folder, { recursive: true, force: true });
    },
  };
}

export const isEnded = (job: JobView) => ['success', 'failed', 'timeout', 'cancelled'].includes(job.status);

/** Fetches a log through its presigned link. */
export async function fetchLog(link: string | null): Promise<string> {
  if (link === null) throw new Error('log link is null');
  const response = await fetch(link);
  if (response.status !== 200) throw new Error(`log fetch: ${response.status}`);

  return response.text();
}

/** build.sr.ht's error shape, as the API returns it. */
export interface ErrorBody {
  errors: Array<{ field?: string; reason: string }>;
}

/** Records every 5xx response of `stack.api`, so that an afterEach hook can fail the test that got one. */
export function recordServerErrors(stack: TestStack): string[] {
  const seen: string[] = [];
  const send = stack.api;
  stack.api = async (method, route, options) => {
    const response = await send(method, route, options);
    if (response.status >= 500) seen.push(`${method} ${route}: ${response.status} ${await response.clone().text()}`);

    return response;
  };

  return seen;
}
