import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { JobView } from '../lib/api/job-view.js';
import { createToken, type Scope } from '../lib/auth/tokens.js';
import type { JobStatus } from '../lib/jobs/state.js';
import { isEnded, startTestStack, type TestStack, recordServerErrors, type ErrorBody } from './support/local-stack.js';

const MANIFEST = `image: alpine/latest
tasks:
  - first: echo first
  - second: echo second
`;

/** How long a test polls for a build to reach a state or for a process to go, before it fails with a message. */
const POLL_GIVE_UP_MS = 45_000;

/**
 * Returns a manifest whose second task writes the pid of its shell and of a
 * background `sleep 600` to files in `folder`, then waits for the sleep.
 */
function hangingManifest(folder: string): string {
  return `image: alpine/latest
tasks:
  - first: echo first
  - hang: |
      echo $$ > ${folder}/shell.pid
      sleep 600 &
      echo $! > ${folder}/sleep.pid
      wait
  - after: echo after
`;
}

async function readPid(file: string): Promise<number | null> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const pid = Number(text.trim());

  return Number.isInteger(pid) && pid > 0 && text.endsWith('\n') ? pid : null;
}

/** Polls until both pid files of {@link hangingManifest} are written; returns the pids. */
async function waitForPids(folder: string): Promise<number[]> {
  const giveUpAt = Date.now() + POLL_GIVE_UP_MS;
  for (;;) {
    const pids = [await readPid(path.join(folder, 'shell.pid')), await readPid(path.join(folder, 'sleep.pid'))];
    if (pids.every((pid) => pid !== null)) return pids as number[];
    if (Date.now() > giveUpAt) throw new Error(`the build never wrote its pid files in ${folder}: does the runner run builds?`);
    await sleep(100);
  }
}

/** Returns the state letter from /proc (such as Z for a zombie), for failure messages. */
async function processState(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');

  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] || 'unknown';
}

/** Polls `process.kill(pid, 0)` until it throws ESRCH; fails, naming the process state, if it never does. */
async function waitUntilGone(pid: number): Promise<void> {
  const giveUpAt = Date.now() + POLL_GIVE_UP_MS;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ESRCH') return;
      throw error;
    }
    if (Date.now() > giveUpAt) throw new Error(`process ${pid} still exists (state ${await processState(pid)}) after the cancel`);
    await sleep(100);
  }
}

describe('POST /api/jobs/:id/cancel', () => {
  let stack: TestStack;
  let serverErrors: string[];
  let pidRoot: string;
  const tokens = new Map<string, string>();

  async function tokenFor(user: string, scopes: Scope[] = ['jobs:read', 'jobs:write']): Promise<string> {
    const key = `${user} ${scopes.join(',')}`;
    if (!tokens.has(key)) tokens.set(key, (await createToken(stack.context.stores.tokens, { user, scopes })).token);

    return tokens.get(key)!;
  }

  async function submitAs(user: string, body: Record<string, unknown>): Promise<JobView> {
    const response = await stack.api('POST', '/api/jobs', { token: await tokenFor(user), body });
    if (response.status !== 200) throw new Error(`submit as ${user}: ${response.status} ${await response.text()}`);

    return (await response.json()) as JobView;
  }

  async function getAs(user: string, id: number): Promise<JobView> {
    const response = await stack.api('GET', `/api/jobs/${id}`, { token: await tokenFor(user) });
    expect(response.status).toBe(200);

    return (await response.json()) as JobView;
  }

  async function cancelAs(user: string, id: number | string): Promise<Response> {
    return stack.api('POST', `/api/jobs/${id}/cancel`, { token: await tokenFor(user) });
  }

  async function waitFor(user: string, id: number, done: (job: JobView) => boolean, what: string): Promise<JobView> {
    const giveUpAt = Date.now() + POLL_GIVE_UP_MS;
    for (;;) {
      const job = await getAs(user, id);
      if (done(job)) return job;
      if (Date.now() > giveUpAt) throw new Error(`job ${id} never became ${what}; last: ${JSON.stringify(job)}`);
      await sleep(100);
    }
  }

  /** Puts a job in a state directly in the store, without the queue or a runner. */
  async function forceStatus(id: number, status: JobStatus): Promise<void> {
    await stack.context.stores.jobs.transition(id, (job) => ({
      ...job,
      status,
      tasks: job.tasks.map((task) => ({ ...task, status: status === 'success' ? 'success' : task.status })),
      finishedAt: ['success', 'failed', 'timeout', 'cancelled'].includes(status) ? Date.now() : null,
    }));
  }

  /**
   * Polls until a job's runner process has exited, or was never launched. A
   * launch recorded before the cancel may still be under way, so the test
   * waits for it to name its runner before it looks for the runner's pid file.
   */
  async function waitForRunnerExit(jobId: number): Promise<void> {
    const pidFile = path.join(stack.launcher.stateDir(jobId), 'runner.pid');
    const giveUpAt = Date.now() + POLL_GIVE_UP_MS;
    for (;;) {
      const record = await stack.context.stores.jobs.get(jobId);
      const launchSettled = record.dispatchedAt === null || record.runner !== null;
      const runnerAlive = await access(pidFile).then(
        () => true,
        () => false,
      );
      if (launchSettled && !runnerAlive) return;
      if (Date.now() > giveUpAt) throw new Error(`the runner of job ${jobId} is still running after the cancel`);
      await sleep(100);
    }
  }

  beforeAll(async () => {
    // One build per user at a time, so that a second job of a user with a running build stays queued.
    stack = await startTestStack({ KILN_MAX_RUNNING_PER_USER: '1' });
    serverErrors = recordServerErrors(stack);
    pidRoot = await mkdtemp(path.join(os.tmpdir(), 'kiln-cancel-pids-'));
  });
  afterEach(() => {
    expect(serverErrors.splice(0)).toEqual([]);
  });
  afterAll(async () => {
    await stack?.destroy();
    if (pidRoot) await rm(pidRoot, { recursive: true, force: true });
  });

  describe('jobs that have not started', () => {
    it('cancels a pending job at once and answers {}', async () => {
      const job = await submitAs('canceller', { manifest: MANIFEST, execute: false });
      const response = await cancelAs('canceller', job.id);

      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({});
      const after = await getAs('canceller', job.id);
      expect(after.status).toBe('cancelled');
      expect(after.tasks.map((task) => task.status)).toEqual(['skipped', 'skipped']);
    });

    it('cancels a queued job at once', async () => {
      const job = await submitAs('canceller', { manifest: MANIFEST, execute: false });
      // Queued in the store but never sent to the queue, so no runner can pick it up.
      await forceStatus(job.id, 'queued');
      expect((await getAs('canceller', job.id)).status).toBe('queued');

      const response = await cancelAs('canceller', job.id);

      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({});
      expect((await getAs('canceller', job.id)).status).toBe('cancelled');
    });

    it('lets exactly one of racing cancels win', async () => {
      const job = await submitAs('canceller', { manifest: MANIFEST, execute: false });
      const responses = await Promise.all(Array.from({ length: 8 }, () => cancelAs('canceller', job.id)));
      const statuses = responses.map((response) => response.status);

      expect(statuses.filter((status) => status === 200)).toHaveLength(1);
      expect(statuses.filter((status) => status === 400)).toHaveLength(7);
      expect((await getAs('canceller', job.id)).status).toBe('cancelled');
    });
  });

  describe('finished jobs', () => {
    it('rejects cancelling a cancelled job with a 400 saying it has finished', async () => {
      const job = await submitAs('canceller', { manifest: MANIFEST, execute: false });
      expect((await cancelAs('canceller', job.id)).status).toBe(200);

      const response = await cancelAs('canceller', job.id);
      const body = (await response.json()) as ErrorBody;

      expect(response.status).toBe(400);
      expect(body.errors).toHaveLength(1);
      expect(body.errors[0].reason).toMatch(/already finished/);
      expect(body.errors[0].reason).toContain('cancelled');
      expect(body.errors[0]).not.toHaveProperty('field');
    });

    it.each(['success', 'failed', 'timeout'] as const)('rejects cancelling a job that ended %s', async (status) => {
      const job = await submitAs('canceller', { manifest: MANIFEST, execute: false });
      await forceStatus(job.id, status);

      const response = await cancelAs('canceller', job.id);
      const body = (await response.json()) as ErrorBody;

      expect(response.status).toBe(400);
      expect(body.errors[0].reason).toMatch(/already finished/);
      expect(body.errors[0].reason).toContain(status);
      expect(body.errors[0]).not.toHaveProperty('field');
      expect((await getAs('canceller', job.id)).status).toBe(status);
    });
  });

  describe('requests that cannot cancel', () => {
    it('answers 403 naming jobs:write for a token without it', async () => {
      const job = await submitAs('scoped', { manifest: MANIFEST, execute: false });
      const response = await stack.api('POST', `/api/jobs/${job.id}/cancel`, { token: await tokenFor('scoped', ['jobs:read']) });
      const body = (await response.json()) as ErrorBody;

      expect(response.status).toBe(403);
      expect(body.errors[0].reason).toContain('jobs:write');
      expect((await getAs('scoped', job.id)).status).toBe('pending');
    });

    it.each(['999999', 'abc', '1.5', '-3', '0'])('answers 404 for job id %s', async (id) => {
      const response = await cancelAs('canceller', id);
      const body = (await response.json()) as ErrorBody;

      expect(response.status).toBe(404);
      expect(body.errors).toHaveLength(1);
    });
  });

  // These tests need the runner in lib/runner/ to run builds.
  describe('running jobs (needs the runner)', () => {
    it('cancels a running build and its processes', async () => {
      const user = 'hanger';
      const folder = await mkdtemp(path.join(pidRoot, 'job-'));
      const job = await submitAs(user, { manifest: hangingManifest(folder) });
      const pids = await waitForPids(folder);
      const running = await waitFor(user, job.id, (view) => view.tasks[1].status === 'running', 'running its hang task');
      expect(running.status).toBe('running');
      expect(running.tasks.map((task) => task.status)).toEqual(['success', 'running', 'pending']);

      // With one build per user, a second job of the same user waits in the queue.
      const waiting = await submitAs(user, { manifest: MANIFEST });
      expect((await getAs(user, waiting.id)).status).toBe('queued');
      const waitingResponse = await cancelAs(user, waiting.id);
      expect(waitingResponse.status).toBe(200);
      expect((await getAs(user, waiting.id)).status).toBe('cancelled');

      const response = await cancelAs(user, job.id);

      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({});
      const after = await getAs(user, job.id);
      expect(after.status).toBe('cancelled');
      expect(after.tasks.map((task) => task.status)).toEqual(['success', 'failed', 'skipped']);
      for (const pid of pids) await waitUntilGone(pid);

      // The cancelled build gave its slot back, so the next build of the same user runs.
      const next = await submitAs(user, { manifest: MANIFEST });
      const done = await waitFor(user, next.id, isEnded, 'ended');
      expect(done.status).toBe('success');
      // Nothing the runner reports later changes the cancelled job.
      expect((await getAs(user, job.id)).status).toBe('cancelled');
    });

    it('cancels jobs caught at any point between start and running', async () => {
      // One user per job, so that the per-user limit lets every job reach its runner.
      const jobs: Array<{ user: string; job: JobView; folder: string }> = [];
      for (let index = 0; index < 6; index++) {
        const user = `racer${index}`;
        const folder = await mkdtemp(path.join(pidRoot, 'race-'));
        jobs.push({ user, job: await submitAs(user, { manifest: hangingManifest(folder), execute: false }), folder });
      }

      // Each job is cancelled at a different delay after its start: in the queue, during launch or while running.
      await Promise.all(
        jobs.map(async ({ user, job }, index) => {
          expect((await stack.api('POST', `/api/jobs/${job.id}/start`, { token: await tokenFor(user) })).status).toBe(200);
          await sleep(index * 300);
          const response = await cancelAs(user, job.id);
          expect(response.status).toBe(200);
        }),
      );

      for (const { user, job, folder } of jobs) {
        expect((await getAs(user, job.id)).status).toBe('cancelled');
        // Once the runner has exited, nothing of the build may be left.
        await waitForRunnerExit(job.id);
        const pids = [await readPid(path.join(folder, 'shell.pid')), await readPid(path.join(folder, 'sleep.pid'))];
        for (const pid of pids) if (pid !== null) await waitUntilGone(pid);
        expect((await getAs(user, job.id)).status).toBe('cancelled');
      }
    });
  });
});
