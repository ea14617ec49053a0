import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGitDaemon, type GitDaemon } from './support/git-daemon.js';
import { fetchLog, isEnded, startTestStack, type TestStack } from './support/local-stack.js';

const CALC_C = `#include <stdio.h>
#include <stdlib.h>

int add(int a, int b) { return a + b; }

int main(int argc, char **argv) {
  if (argc == 2 && argv[1][0] == 't') {
    if (add(2, 3) != 5) { puts("FAIL add"); return 1; }
    puts("calc tests passed");
    return 0;
  }
  if (argc != 3) { fputs("usage: calc A B\\n", stderr); return 2; }
  printf("%d\\n", add(atoi(argv[1]), atoi(argv[2])));
  return 0;
}
`;

const MAKEFILE = `calc: calc.c
\tcc -O2 -Wall -o calc calc.c

check: calc
\t./calc test
`;

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, GIT_AUTHOR_NAME: 'Test', GIT_AUTHOR_EMAIL: 't@example.org', GIT_COMMITTER_NAME: 'Test', GIT_COMMITTER_EMAIL: 't@example.org' },
  });
}

/** Makes a git repository with the C program on a `release` branch and a broken main branch. */
async function makeCalcRepository(root: string): Promise<string> {
  const repo = path.join(root, 'calc.git');
  git(root, 'init', '-q', '-b', 'main', repo);
  await writeFile(path.join(repo, 'README'), 'work in progress\n');
  git(repo, 'add', '.');
  git(repo, 'commit', '-q', '-m', 'Start');
  git(repo, 'checkout', '-q', '-b', 'release');
  await writeFile(path.join(repo, 'calc.c'), CALC_C);
  await writeFile(path.join(repo, 'Makefile'), MAKEFILE);
  git(repo, 'add', '.');
  git(repo, 'commit', '-q', '-m', 'Add calc');
  git(repo, 'checkout', '-q', 'main');

  return repo;
}

describe('build end to end', () => {
  let stack: TestStack;
  let root: string;
  let daemon: GitDaemon;
  let repo: string;

  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'kiln-e2e-'));
    await makeCalcRepository(root);
    daemon = await startGitDaemon(root);
    repo = `${daemon.url}/calc.git`;
    stack = await startTestStack({ KILN_JOB_TIMEOUT: '5s', KILN_LOG_MAX_BYTES: '64KiB' });
  });
  afterAll(async () => {
    await stack.destroy();
    await daemon.close();
    await rm(root, { recursive: true, force: true });
  });

  it('clones, builds and tests a C program', async () => {
    const manifest = `image: debian/stable
packages:
  - build-essential
sources:
  - ${repo}#release
  - pinned::${repo}#release
environment:
  GREETING: "it's a build"
tasks:
  - build: |
      cd calc
      make
  - test: |
      cd pinned
      make check
      ./calc 40 2
      echo "$GREETING $CI_NAME $JOB_ID"
`;
    const submitted = await stack.submit({ manifest, note: 'calc' });
    expect(submitted.status).toBe('queued');

    const job = await stack.waitForJob(submitted.id, isEnded);

    expect(job.status).toBe('success');
    expect(job.runner).toBe('local');
    expect(job.tasks.map((task) => [task.name, task.status])).toEqual([
      ['build', 'success'],
      ['test', 'success'],
    ]);
    const setupLog = await fetchLog(job.setup_log);
    expect(setupLog).toContain('calc.git');
    expect(setupLog).toContain('build-essential');
    const buildLog = await fetchLog(job.tasks[0].log);
    expect(buildLog).toContain('+ make');
    expect(buildLog).toContain('cc -O2 -Wall -o calc calc.c');
    const testLog = await fetchLog(job.tasks[1].log);
    expect(testLog).toContain('calc tests passed');
    expect(testLog).toMatch(/^42$/m);
    expect(testLog).toContain(`it's a build kiln ${job.id}`);
  });

  it('serves logs through the redirect routes', async () => {
    const submitted = await stack.submit({ manifest: 'image: alpine/latest\ntasks:\n  - hi: echo redirected\n' });
    const job = await stack.waitForJob(submitted.id, isEnded);

    const setup = await stack.api('GET', `/api/jobs/${job.id}/log`);
    const task = await stack.api('GET', `/api/jobs/${job.id}/tasks/hi/log`);

    expect(setup.status).toBe(302);
    expect(task.status).toBe(302);
    const taskLog = await fetch(task.headers.get('location')!);
    expect(taskLog.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(await taskLog.text()).toContain('redirected');
  });

  it('skips the tasks after a failing one', async () => {
    const manifest = 'image: alpine/latest\ntasks:\n  - one: echo one\n  - two: exit 3\n  - three: echo three\n';
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);

    expect(job.status).toBe('failed');
    expect(job.tasks.map((task) => task.status)).toEqual(['success', 'failed', 'skipped']);
    expect(await fetchLog(job.setup_log)).toMatch(/two.*(exit|code).*3/is);
  });

  it('ends the build early on complete-build', async () => {
    const manifest = 'image: alpine/latest\ntasks:\n  - one: |\n      echo one\n      complete-build\n      echo never\n  - two: echo two\n';
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);

    expect(job.status).toBe('success');
    expect(job.tasks.map((task) => task.status)).toEqual(['success', 'skipped']);
    expect(await fetchLog(job.tasks[0].log)).not.toMatch(/^never$/m);
  });

  it('times out a task that runs past the deadline', async () => {
    const manifest = 'image: alpine/latest\ntasks:\n  - slow: sleep 600\n  - after: echo after\n';
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);

    expect(job.status).toBe('timeout');
    expect(job.tasks.map((task) => task.status)).toEqual(['failed', 'skipped']);
    expect(await fetchLog(job.setup_log)).toMatch(/time/i);
  });

  it('cuts a log at the size cap', async () => {
    const manifest = 'image: alpine/latest\ntasks:\n  - noisy: |\n      set +x\n      yes "a line of output" | head -c 1000000\n';
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);
    const log = await fetchLog(job.tasks[0].log);

    expect(job.status).toBe('success');
    expect(Buffer.byteLength(log)).toBeLessThan(64 * 1024 + 1024);
    expect(log).toMatch(/KILN_LOG_MAX_BYTES/);
  });

  it('keeps invalid UTF-8 output as valid UTF-8', async () => {
    const manifest = "image: alpine/latest\ntasks:\n  - bytes: printf 'caf\\xc3\\xa9 \\xff\\xfe end\\n'\n";
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);
    const response = await fetch(job.tasks[0].log!);
    const bytes = Buffer.from(await response.arrayBuffer());

    expect(job.status).toBe('success');
    expect(() => new TextDecoder('utf-8', { fatal: true }).decode(bytes)).not.toThrow();
    expect(bytes.toString('utf8')).toContain('café \uFFFD\uFFFD end');
  });

  it('fails the job when a source cannot be cloned', async () => {
    const manifest = `image: alpine/latest\nsources:\n  - ${daemon.url}/missing.git\ntasks:\n  - never: echo never\n`;
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);

    expect(job.status).toBe('failed');
    expect(job.tasks.map((task) => task.status)).toEqual(['skipped']);
    expect(await fetchLog(job.setup_log)).toContain('missing.git');
  });

  it('runs a shell manifest without tasks', async () => {
    const submitted = await stack.submit({ manifest: 'image: alpine/latest\nshell: true\n' });
    const job = await stack.waitForJob(submitted.id, isEnded);

    expect(job.status).toBe('success');
    expect(job.tasks).toEqual([]);
    const setupLog = await fetchLog(job.setup_log);
    expect(setupLog).toContain('NOTE: "shell: true" has no effect, because Kiln offers no SSH access to builds.');
    expect(setupLog).toContain('The manifest has no tasks, so the job ends after the setup.');
  });

  it('accepts variable names that are JavaScript object keys', async () => {
    const manifest = 'image: alpine/latest\nenvironment:\n  constructor: built\n  __proto__: proto\n  toString: text\ntasks:\n  - show: echo "$constructor $__proto__ $toString"\n';
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);

    expect(job.status).toBe('success');
    expect(await fetchLog(job.tasks[0].log)).toMatch(/^built proto text$/m);
  });

  it('keeps the output of a runner that was killed', async () => {
    // The task waits until the runner has written its line to the log file on disk, then kills the runner.
    const onDisk = '"$HOME/../../runners/$JOB_ID/logs/task-1.log"';
    const manifest = `image: alpine/latest\ntasks:\n  - crash: |\n      echo before-the-crash\n      until grep -q '^before-the-crash' ${onDisk}; do sleep 0.1; done\n      kill -9 $PPID\n      sleep 5\n`;
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);

    expect(job.status).toBe('failed');
    expect(job.tasks[0].status).toBe('failed');
    expect(await fetchLog(job.tasks[0].log)).toContain('before-the-crash');
    const setupLog = await fetchLog(job.setup_log);
    expect(setupLog).toContain('Running task crash');
    expect(setupLog).toContain('was killed by SIGKILL');
  });

  it('hides the service environment from build tasks', async () => {
    const manifest = 'image: alpine/latest\ntasks:\n  - env: |\n      env | sort\n      echo "HOME=$HOME"\n';
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);
    const log = await fetchLog(job.tasks[0].log);

    expect(log).not.toContain('KILN_');
    expect(log).not.toMatch(/^AWS_/m);
    expect(log).toContain(`HOME=${path.join(stack.dataDir, 'builds', String(job.id))}`);
  });
});
