import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { JobView } from '../lib/api/job-view.js';
import { fetchLog, isEnded, startTestStack } from './support/local-stack.js';

const REPOSITORY = path.resolve(import.meta.dirname, '..');

interface StartedProcess {
  child: ChildProcess;
  apiUrl: string;
  lines: string[];
}

/** Runs `npm start`'s entry point as its own process, on free ports, and waits for the ready line. */
async function startProcess(dataDir: string, env: Record<string, string> = {}): Promise<StartedProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'infra/local/main.ts'], {
    cwd: REPOSITORY,
    env: {
      ...process.env,
      KILN_DATA_DIR: dataDir,
      KILN_API_PORT: '0',
      KILN_S3_PORT: '0',
      KILN_DYNAMODB_PORT: '0',
      KILN_LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const reader = createInterface({ input: child.stdout! });
  const apiUrl = await new Promise<string>((resolve, reject) => {
    reader.on('line', (line) => {
      lines.push(line);
      const match = /^Kiln is ready at (\S+)/.exec(line);
      if (match) resolve(match[1]);
    });
    child.once('exit', (code) => reject(new Error(`local stack exited with ${code}: ${lines.join('\n')}`)));
  });

  return { child, apiUrl, lines };
}

async function request(started: StartedProcess, token: string, method: string, route: string, body?: unknown) {
  const response = await fetch(`${started.apiUrl}${route}`, {
    method,
    headers: { authorization: `token ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

  return (await response.json()) as JobView;
}

async function waitFor(started: StartedProcess, token: string, id: number, done: (job: JobView) => boolean): Promise<JobView> {
  for (let attempt = 0; attempt < 300; attempt++) {
    const job = await request(started, token, 'GET', `/api/jobs/${id}`);
    if (done(job)) return job;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`job ${id} did not reach the expected state`);
}

/** Reads a pid that a build task writes, waiting for the file and its content. */
async function readPid(file: string): Promise<number> {
  for (;;) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (text.endsWith('\n')) return Number(text.trim());
    await sleep(50);
  }
}

/**
 * Polls until a process is gone, so one that stays makes the test time out.
 * A zombie counts as gone, because init in some containers never reaps it.
 */
async function waitUntilGone(pid: number): Promise<void> {
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ESRCH') return;
      throw error;
    }
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (stat === '' || stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return;
    await sleep(50);
  }
}

function killProcess(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // The process is gone, as the test expects.
  }
}

describe('local stack', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('fails running jobs and runs queued ones after a crash', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'kiln-restart-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const first = await startProcess(dataDir, { KILN_MAX_RUNNING_PER_USER: '1' });
    cleanups.push(async () => {
      first.child.kill('SIGKILL');
    });
    const token = (await readFile(path.join(dataDir, 'token'), 'utf8')).trim();
    expect(first.lines.join('\n')).toContain(token);

    const running = await request(first, token, 'POST', '/api/jobs', {
      manifest: 'image: alpine/latest\ntasks:\n  - wait: |\n      sleep 600 &\n      echo $! > ~/sleep.pid\n      wait\n',
    });
    await waitFor(first, token, running.id, (job) => job.status === 'running' && job.tasks[0].status === 'running');
    const sleepPid = await readPid(path.join(dataDir, 'builds', String(running.id), 'sleep.pid'));
    cleanups.push(async () => killProcess(sleepPid));
    const waiting = await request(first, token, 'POST', '/api/jobs', {
      manifest: 'image: alpine/latest\ntasks:\n  - quick: echo after restart\n',
    });
    expect(waiting.status).toBe('queued');

    first.child.kill('SIGKILL');
    await once(first.child, 'exit');
    const second = await startProcess(dataDir);
    cleanups.push(async () => {
      second.child.kill('SIGINT');
      await once(second.child, 'exit');
    });

    const failed = await waitFor(second, token, running.id, isEnded);
    expect(failed.status).toBe('failed');
    expect(failed.tasks[0].status).toBe('failed');
    expect(await fetchLog(failed.setup_log)).toContain('The local stack stopped while this job ran');
    const ran = await waitFor(second, token, waiting.id, isEnded);
    expect(ran.status).toBe('success');
    expect(await fetchLog(ran.tasks[0].log)).toContain('after restart');
    expect(second.lines.join('\n')).toContain(`job ${running.id} failed`);
    await waitUntilGone(sleepPid);
  });

  it('shuts down cleanly on SIGINT', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'kiln-sigint-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const started = await startProcess(dataDir);

    started.child.kill('SIGINT');
    const [code] = await once(started.child, 'exit');

    expect(code).toBe(0);
  });

  it('refuses a second stack on the same data folder', async () => {
    const stack = await startTestStack();
    cleanups.push(() => stack.destroy());

    await expect(startTestStack({}, stack.dataDir)).rejects.toThrow(/in use by another Kiln \(pid \d+\)/);
    expect((await stack.api('GET', '/api/jobs')).status).toBe(200);
  });

  it('keeps a job over the per-user limit queued until a slot frees', async () => {
    const stack = await startTestStack({ KILN_MAX_RUNNING_PER_USER: '1' });
    cleanups.push(() => stack.destroy());

    const release = path.join(stack.dataDir, 'release-first-job');
    const first = await stack.submit({
      manifest: `image: alpine/latest\ntasks:\n  - hold: while [ ! -e ${release} ]; do sleep 0.2; done\n`,
    });
    await stack.waitForJob(first.id, (job) => job.status === 'running');
    const second = await stack.submit({ manifest: 'image: alpine/latest\ntasks:\n  - next: echo next\n' });

    const whileFirstRuns = await stack.getJob(second.id);
    expect(whileFirstRuns.status).toBe('queued');
    expect(whileFirstRuns.runner).toBeNull();
    await writeFile(release, '');
    const firstDone = await stack.waitForJob(first.id, isEnded);
    expect(firstDone.status).toBe('success');
    expect((await stack.waitForJob(second.id, isEnded)).status).toBe('success');
  });
});
