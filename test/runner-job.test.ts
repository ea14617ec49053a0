import { isUtf8 } from 'node:buffer';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClaimedJob, ClaimedTask, LogUrlRequest } from '../lib/runner/protocol.js';
import {
  makeRunnerFolders,
  runRunner,
  startFakeRunnerApi,
  startRunner,
  type FakeRunnerApi,
  type FakeRunnerApiOptions,
  type RunnerFolders,
} from './support/fake-runner-api.js';
import { startGitDaemon } from './support/git-daemon.js';
import { startHgServe } from './support/hg-serve.js';

const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  while (cleanups.length > 0) {
    await cleanups.pop()!();
  }
});

interface Setup {
  api: FakeRunnerApi;
  folders: RunnerFolders;
}

async function setUp(job: Partial<ClaimedJob> & { tasks: ClaimedTask[] }, options: Omit<FakeRunnerApiOptions, 'job'> = {}): Promise<Setup> {
  const api = await startFakeRunnerApi({ job, ...options });
  cleanups.push(() => api.close());
  const folders = await makeRunnerFolders();
  cleanups.push(() => folders.remove());
  return { api, folders };
}

async function temporaryFolder(): Promise<string> {
  const folder = await mkdtemp(path.join(os.tmpdir(), 'kiln-runner-repo-'));
  cleanups.push(() => rm(folder, { recursive: true, force: true }));
  return folder;
}

async function logText(api: FakeRunnerApi, request: LogUrlRequest): Promise<string> {
  const bytes = await api.readLog(request);
  if (bytes === null) {
    throw new Error(`log ${JSON.stringify(request)} was never uploaded`);
  }
  return bytes.toString('utf8');
}

const setupLog = (api: FakeRunnerApi): Promise<string> => logText(api, { log: 'setup' });
const taskLog = (api: FakeRunnerApi, task: string): Promise<string> => logText(api, { log: 'task', task });

/** Returns the pids of live processes in a process group; zombies count as gone because they no longer run. */
function liveProcessesInGroup(group: number): number[] {
  const pids: number[] = [];
  for (const entry of execFileSync('ls', ['/proc'], { encoding: 'utf8' }).split('\n')) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    let stat: string;
    try {
      stat = execFileSync('cat', [`/proc/${entry}/stat`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      continue;
    }
    // Fields after the command name, which is in parentheses: state, ppid, pgrp, ...
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === group && fields[0] !== 'Z') {
      pids.push(Number(entry));
    }
  }
  return pids;
}

/** Returns the pids of processes whose command line is exactly `argv`. */
async function processesRunning(argv: string[]): Promise<number[]> {
  const wanted = `${argv.join('\0')}\0`;
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    const commandLine = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (commandLine === wanted) {
      pids.push(Number(entry));
    }
  }
  return pids;
}

async function waitForFile(file: string): Promise<string> {
  while (!existsSync(file)) {
    await sleep(100);
  }
  // The shell may have created the file before writing to it.
  let text = '';
  while (text === '') {
    text = (await readFile(file, 'utf8')).trim();
    await sleep(50);
  }
  return text;
}

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'user.name=Kiln Test', '-c', 'user.email=test@kiln.invalid', '-c', 'init.defaultBranch=main', ...args], {
    cwd,
    encoding: 'utf8',
  }).trim();
}

describe('runner', () => {
  it('runs two tasks to success', async () => {
    const environment = {
      QUOTE: "it's",
      MULTILINE: 'one\ntwo\n',
      DOLLAR: '$HOME `id` $(id)',
      UNICODE: 'héllo ✓ 🚀',
      YES: true,
      NO: false,
      COUNT: 42,
      NOTHING: null,
      LIST: ['a', 'b c', "it's", ''],
    };
    const scalarNames = ['QUOTE', 'MULTILINE', 'DOLLAR', 'UNICODE', 'YES', 'NO', 'COUNT', 'NOTHING', 'CI', 'CI_NAME', 'JOB_ID', 'JOB_URL'];
    const { api, folders } = await setUp({
      environment,
      packages: ['curl', 'jq'],
      tasks: [
        {
          name: 'first',
          script: [
            'mkdir -p ~/out',
            ...scalarNames.map((name) => `printf '%s' "$${name}" > ~/out/${name}`),
            'printf \'%s\\n\' "${#LIST[@]}" > ~/out/LIST_LENGTH',
            'for i in "${!LIST[@]}"; do printf \'%s\' "${LIST[$i]}" > ~/out/LIST_$i; done',
            'echo first-output',
          ].join('\n'),
        },
        { name: 'second', script: 'echo to-stdout\necho to-stderr >&2\necho after-stderr' },
      ],
    });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    expect(api.violations).toEqual([]);
    expect(api.taskUpdates).toEqual([
      { task: 'first', status: 'running' },
      { task: 'first', status: 'success' },
      { task: 'second', status: 'running' },
      { task: 'second', status: 'success' },
    ]);
    expect(api.completion).toEqual({ status: 'success' });

    const read = (name: string): Promise<string> => readFile(path.join(folders.home, 'out', name), 'utf8');
    expect(await read('QUOTE')).toBe("it's");
    expect(await read('MULTILINE')).toBe('one\ntwo\n');
    expect(await read('DOLLAR')).toBe('$HOME `id` $(id)');
    expect(await read('UNICODE')).toBe('héllo ✓ 🚀');
    expect(await read('YES')).toBe('true');
    expect(await read('NO')).toBe('false');
    expect(await read('COUNT')).toBe('42');
    expect(await read('NOTHING')).toBe('');
    expect(await read('CI')).toBe('true');
    expect(await read('CI_NAME')).toBe('kiln');
    expect(await read('JOB_ID')).toBe('42');
    expect(await read('JOB_URL')).toBe(`${api.url}/api/jobs/42`);
    expect(await read('LIST_LENGTH')).toBe('4\n');
    expect(await Promise.all([0, 1, 2, 3].map((index) => read(`LIST_${index}`)))).toEqual(['a', 'b c', "it's", '']);

    const first = await taskLog(api, 'first');
    expect(first).toContain('+ echo first-output\nfirst-output\n');
    const second = await taskLog(api, 'second');
    expect(second).toMatch(/to-stdout\n[^]*to-stderr\n[^]*after-stderr\n/);

    const setup = await setupLog(api);
    expect(setup).toContain('Claimed job 42: image debian/stable, arch x86_64');
    expect(setup).toContain('NOTE: Packages not installed: curl jq');
    expect(setup).toContain('Task first succeeded (exit code 0).');
    expect(setup).toContain('Task second succeeded (exit code 0).');
    expect(setup.trimEnd().split('\n').at(-1)).toBe('Job succeeded.');
  });

  it('succeeds with shell and no tasks', async () => {
    const { api, folders } = await setUp({ shell: true, tasks: [] });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    expect(api.violations).toEqual([]);
    expect(api.taskUpdates).toEqual([]);
    expect(api.completion).toEqual({ status: 'success' });
    const setup = await setupLog(api);
    expect(setup).toContain('NOTE: "shell: true" has no effect, because Kiln offers no SSH access to builds. The job ends after its last task.\n');
    expect(setup).toContain('The manifest has no tasks, so the job ends after the setup.\n');
    expect(setup.trimEnd().split('\n').at(-1)).toBe('Job succeeded.');
  });

  it('notes shell without SSH before the tasks', async () => {
    const { api, folders } = await setUp({ shell: true, tasks: [{ name: 'only', script: 'true' }] });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    const setup = await setupLog(api);
    expect(setup.indexOf('NOTE: "shell: true" has no effect')).toBeGreaterThanOrEqual(0);
    expect(setup.indexOf('NOTE: "shell: true" has no effect')).toBeLessThan(setup.indexOf('Running task only.'));
    expect(setup).not.toContain('The manifest has no tasks');
  });

  it('writes JSON diagnostics without secrets', async () => {
    const { api, folders } = await setUp({ tasks: [{ name: 'only', script: 'true' }] });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    const lines = result.stderr.trim().split('\n');
    for (const line of lines) {
      expect(JSON.parse(line)).toMatchObject({ jobId: '42' });
    }
    expect(result.stderr).not.toContain(api.jobToken);
    expect(result.stderr).not.toContain(api.sessionToken!);
    expect(result.stderr).not.toContain('X-Amz-Signature');
  });

  it('skips the tasks after a failed task', async () => {
    const { api, folders } = await setUp({
      tasks: [
        { name: 'a', script: 'echo a' },
        { name: 'b', script: 'echo before\nexit 3\necho after' },
        { name: 'c', script: 'touch ~/c-ran' },
      ],
    });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(1);
    expect(api.violations).toEqual([]);
    expect(api.taskStatus('a')).toBe('success');
    expect(api.taskStatus('b')).toBe('failed');
    expect(api.taskStatus('c')).toBe('skipped');
    expect(api.completion).toEqual({ status: 'failed', reason: 'task b failed (exit code 3)' });
    expect(existsSync(path.join(folders.home, 'c-ran'))).toBe(false);
    expect(await taskLog(api, 'b')).not.toContain('after');
    expect(await api.readLog({ log: 'task', task: 'c' })).toBeNull();

    const setup = await setupLog(api);
    expect(setup).toContain('Task b failed (exit code 3).');
    expect(setup).toContain('Skipping task(s): c.');
    expect(setup).toContain('Job failed: task b failed (exit code 3).');
  });

  it('ends the job early with complete-build', async () => {
    const { api, folders } = await setUp({
      tasks: [
        { name: 'a', script: 'echo a\ncomplete-build\necho unreachable' },
        { name: 'b', script: 'touch ~/b-ran' },
      ],
    });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    expect(api.violations).toEqual([]);
    expect(api.taskStatus('a')).toBe('success');
    expect(api.taskStatus('b')).toBe('skipped');
    expect(api.completion).toEqual({ status: 'success' });
    expect(existsSync(path.join(folders.home, 'b-ran'))).toBe(false);
    expect(await taskLog(api, 'a')).not.toContain('echo unreachable');
    expect(await setupLog(api)).toContain('Task a ran complete-build');
  });

  it('kills the task at the deadline', async () => {
    const { api, folders } = await setUp(
      {
        tasks: [
          { name: 'slow', script: 'echo $$ > ~/task.pid\nsleep 613' },
          { name: 'later', script: 'true' },
        ],
      },
      { deadlineAfterMs: 3_000 },
    );

    const result = await runRunner(api, folders);

    expect(result.code).toBe(1);
    expect(api.violations).toEqual([]);
    expect(api.taskStatus('slow')).toBe('failed');
    expect(api.taskStatus('later')).toBe('skipped');
    expect(api.completion).toEqual({ status: 'timeout' });

    const group = Number(await readFile(path.join(folders.home, 'task.pid'), 'utf8'));
    expect(liveProcessesInGroup(group)).toEqual([]);
    expect(await processesRunning(['sleep', '613'])).toEqual([]);

    const setup = await setupLog(api);
    expect(setup).toContain(`The job reached its deadline ${api.deadline}.`);
    expect(setup).toContain('Task slow was stopped (killed by SIGTERM).');
    expect(setup).toContain('Job timed out');
    expect(await taskLog(api, 'slow')).toContain('+ sleep 613');
  });

  it('stops the task on SIGTERM', async () => {
    const { api, folders } = await setUp({
      tasks: [
        { name: 'slow', script: 'echo $$ > ~/task.pid\nsleep 617' },
        { name: 'later', script: 'true' },
      ],
    });

    const runner = startRunner(api, folders);
    const group = Number(await waitForFile(path.join(folders.home, 'task.pid')));
    process.kill(runner.pid, 'SIGTERM');
    const result = await runner.exited;

    expect(result.code).toBe(1);
    expect(api.violations).toEqual([]);
    expect(api.taskStatus('slow')).toBe('failed');
    expect(api.taskStatus('later')).toBe('skipped');
    expect(api.completion).toEqual({ status: 'failed', reason: 'the runner received SIGTERM' });
    expect(liveProcessesInGroup(group)).toEqual([]);
    expect(await processesRunning(['sleep', '617'])).toEqual([]);
    expect(await setupLog(api)).toContain('The runner received SIGTERM and stops the job.');
  });

  it('keeps background processes until the job ends', async () => {
    const { api, folders } = await setUp({
      tasks: [
        { name: 'start', script: 'sleep 619 &\necho $! > ~/background.pid' },
        { name: 'check', script: 'kill -0 "$(cat ~/background.pid)"' },
      ],
    });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    expect(api.taskStatus('start')).toBe('success');
    expect(api.taskStatus('check')).toBe('success');
    expect(await processesRunning(['sleep', '619'])).toEqual([]);
    expect(await setupLog(api)).toContain('Stopped background processes that task start left running.');
  });

  it('cuts a log over the cap and keeps draining', async () => {
    const cap = 100_000;
    const { api, folders } = await setUp({
      logMaxBytes: cap,
      tasks: [{ name: 'noisy', script: "head -c 5000000 /dev/zero | tr '\\0' x\necho done-marker" }],
    });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    expect(api.taskStatus('noisy')).toBe('success');
    const log = await api.readLog({ log: 'task', task: 'noisy' });
    expect(log).not.toBeNull();
    const text = log!.toString('utf8');
    expect(text).toContain(`[kiln] This log was cut at ${cap} bytes (KILN_LOG_MAX_BYTES); the rest of the output was discarded.\n`);
    expect(text).not.toContain('done-marker');
    expect(log!.length).toBeLessThanOrEqual(cap + 200);
  });

  it('stores invalid UTF-8 with replacement characters', async () => {
    const { api, folders } = await setUp({
      tasks: [{ name: 'binary', script: "printf 'ok \\xff\\xfe bad \\xe2\\x82 cut \\xf0\\x9f\\x9a\\x80 rocket\\n'" }],
    });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    const log = (await api.readLog({ log: 'task', task: 'binary' }))!;
    expect(isUtf8(log)).toBe(true);
    expect(log.toString('utf8')).toContain('ok \uFFFD\uFFFD bad \uFFFD cut 🚀 rocket\n');
  });

  it('clones git sources with refs and folders', async () => {
    const root = await temporaryFolder();
    const work = path.join(root, 'work');
    git(root, 'init', '-q', work);
    await writeFile(path.join(work, 'version'), 'one');
    git(work, 'add', 'version');
    git(work, 'commit', '-q', '-m', 'one');
    const firstCommit = git(work, 'rev-parse', 'HEAD');
    git(work, 'tag', 'v1');
    git(work, 'checkout', '-q', '-b', 'feature');
    await writeFile(path.join(work, 'version'), 'feature');
    git(work, 'commit', '-q', '-am', 'feature');
    git(work, 'checkout', '-q', 'main');
    await writeFile(path.join(work, 'version'), 'two');
    git(work, 'commit', '-q', '-am', 'two');
    const served = path.join(root, 'served');
    git(root, 'clone', '-q', '--bare', work, path.join(served, 'project.git'));
    const daemon = await startGitDaemon(served);
    cleanups.push(() => daemon.close());
    const url = `${daemon.url}/project.git`;

    const { api, folders } = await setUp({
      sources: [url, `branch::${url}#feature`, `tagged::${url}#v1`, `pinned::${url}#${firstCommit}`],
      tasks: [{ name: 'read', script: 'cat project/version branch/version tagged/version pinned/version > ~/versions' }],
    });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    expect(await readFile(path.join(folders.home, 'versions'), 'utf8')).toBe('twofeatureoneone');
    const setup = await setupLog(api);
    expect(setup).toContain(`Cloning ${url}: git clone --recursive -- ${url} project`);
    expect(setup).toContain(`git -C pinned checkout -q ${firstCommit} --`);
  });

  it('clones an hg source with a ref', async () => {
    const root = await temporaryFolder();
    const repository = path.join(root, 'hgproject');
    execFileSync('hg', ['init', repository]);
    const hg = (...args: string[]): string => execFileSync('hg', ['--cwd', repository, ...args], { encoding: 'utf8' });
    await writeFile(path.join(repository, 'version'), 'one');
    hg('add', 'version');
    hg('commit', '-u', 'tester', '-m', 'one');
    hg('tag', '-u', 'tester', 'first');
    await writeFile(path.join(repository, 'version'), 'two');
    hg('commit', '-u', 'tester', '-m', 'two');
    const server = await startHgServe(repository);
    cleanups.push(() => server.close());

    const { api, folders } = await setUp({
      sources: [`hg+${server.url}`, `old::hg+${server.url}#first`],
      tasks: [{ name: 'read', script: 'cat hgproject/version old/version > ~/versions' }],
    });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    expect(await readFile(path.join(folders.home, 'versions'), 'utf8')).toBe('twoone');
    expect(await setupLog(api)).toContain(`hg clone --noninteractive -- ${server.url} hgproject`);
  });

  it('fails the job when a clone fails', async () => {
    const root = await temporaryFolder();
    const daemon = await startGitDaemon(root);
    cleanups.push(() => daemon.close());
    const missing = `${daemon.url}/missing.git`;
    const { api, folders } = await setUp({
      sources: [missing],
      tasks: [{ name: 'never', script: 'touch ~/never-ran' }],
    });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(1);
    expect(api.violations).toEqual([]);
    expect(api.taskStatus('never')).toBe('skipped');
    expect(api.completion?.status).toBe('failed');
    expect(existsSync(path.join(folders.home, 'never-ran'))).toBe(false);
    const setup = await setupLog(api);
    expect(setup).toMatch(/fatal: .*missing\.git/);
    expect(setup).toContain(`Cloning ${missing} failed (git: exit code 128).`);
  });

  it('rejects file URLs and plain paths', async () => {
    const root = await temporaryFolder();
    const bare = path.join(root, 'local.git');
    git(root, 'init', '-q', '--bare', bare);

    for (const source of [`file://${bare}`, bare]) {
      const { api, folders } = await setUp({
        sources: [source],
        tasks: [{ name: 'never', script: 'touch ~/never-ran' }],
      });

      const result = await runRunner(api, folders);

      expect(result.code, source).toBe(1);
      expect(api.violations, source).toEqual([]);
      expect(api.taskStatus('never'), source).toBe('skipped');
      expect(api.completion?.status, source).toBe('failed');
      expect(api.completion?.reason, source).toContain(`source ${source} is invalid`);
      expect(existsSync(path.join(folders.home, 'never-ran')), source).toBe(false);
      expect(existsSync(path.join(folders.home, 'local')), source).toBe(false);
      expect(await setupLog(api), source).toContain(`Cannot clone source ${source}: Source ${JSON.stringify(source)}`);
    }
  });

  it('hides a URL password in an invalid source', async () => {
    const source = 'ftp://builder:hunter2-password@127.0.0.1/repo';
    const { api, folders } = await setUp({ sources: [source], tasks: [{ name: 'never', script: 'true' }] });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(1);
    const setup = await setupLog(api);
    expect(setup).toContain('Cannot clone source ftp://builder:***@127.0.0.1/repo');
    expect(setup).not.toContain('hunter2-password');
    expect(api.completion?.reason).not.toContain('hunter2-password');
  });

  it('hides runner variables from tasks', async () => {
    const { api, folders } = await setUp({ tasks: [{ name: 'env', script: 'env' }] });

    const result = await runRunner(api, folders, {
      KILN_EXTRA_SETTING: 'kiln-value',
      AWS_SECRET_ACCESS_KEY: 'aws-secret-value',
      AWS_REGION: 'aws-region-value',
      UNRELATED_PARENT_VARIABLE: 'parent-value',
    });

    expect(result.code).toBe(0);
    const log = await taskLog(api, 'env');
    const variables = log.split('\n').filter((line) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(line));
    expect(variables.filter((line) => line.startsWith('KILN_'))).toEqual([]);
    expect(variables.filter((line) => line.startsWith('AWS_'))).toEqual([]);
    expect(log).not.toContain('parent-value');
    expect(log).not.toContain('aws-secret-value');
    expect(log).not.toContain(api.jobToken);
    expect(variables).toContain(`HOME=${folders.home}`);
    expect(variables).toContain('TERM=dumb');
    expect(variables).toContain('LANG=C.UTF-8');
    expect(variables).toContain('SHELL=/bin/bash');
    expect(variables).toContain('CI=true');
  });

  it('stops when a task update returns 409', async () => {
    const { api, folders } = await setUp(
      {
        tasks: [
          { name: 'first', script: 'echo first' },
          { name: 'second', script: 'touch ~/second-ran' },
        ],
      },
      { conflictOnTaskUpdate: (task, status) => task === 'second' && status === 'running' },
    );

    const result = await runRunner(api, folders);

    expect(result.code).toBe(1);
    expect(api.violations).toEqual([]);
    expect(api.taskUpdates).toEqual([
      { task: 'first', status: 'running' },
      { task: 'first', status: 'success' },
    ]);
    expect(api.completion).toBeNull();
    expect(existsSync(path.join(folders.home, 'second-ran'))).toBe(false);
    expect(await setupLog(api)).toContain('The service reports that the job has already ended');
  });

  it('exits with 2 when the claim fails', async () => {
    const { api, folders } = await setUp({ tasks: [{ name: 'never', script: 'touch ~/never-ran' }] });

    const result = await runRunner(api, folders, { KILN_JOB_TOKEN: 'kilnjob_wrong' });

    expect(result.code).toBe(2);
    expect(api.taskUpdates).toEqual([]);
    expect(existsSync(path.join(folders.home, 'never-ran'))).toBe(false);
  });
});
