import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { quoteShellWord } from '../lib/runner/buildenv.js';
import { installPackages, type PackageSetupOptions } from '../lib/runner/package-setup.js';
import { packageSetupCommands, type PackageRequest, type SetupCommand } from '../lib/runner/packages.js';
import type { ClaimedJob, ClaimedTask } from '../lib/runner/protocol.js';
import type { CommandResult } from '../lib/runner/tasks.js';
import { makeRunnerFolders, runRunner, startFakeRunnerApi, type FakeRunnerApi, type RunnerFolders } from './support/fake-runner-api.js';

const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  while (cleanups.length > 0) {
    await cleanups.pop()!();
  }
});

const APT_REPOSITORY = 'https://deb.example.org/debian stable main';

function exited(exitCode: number): CommandResult {
  return { exitCode, signal: null, spawnError: null, processGroup: 4242 };
}

/** Runs installPackages with a command runner that records each command and returns the exit code that `exitCodeOf` picks. */
async function runSetup(
  fields: Partial<Omit<PackageSetupOptions, 'run' | 'log'>> & { request: PackageRequest },
  exitCodeOf: (command: SetupCommand) => number = () => 0,
): Promise<{ result: Awaited<ReturnType<typeof installPackages>>; commands: SetupCommand[]; lines: string[] }> {
  const commands: SetupCommand[] = [];
  const lines: string[] = [];
  const result = await installPackages({
    image: 'debian/stable',
    runnerIsRoot: true,
    buildUser: 'build',
    signal: new AbortController().signal,
    ...fields,
    log: (line) => lines.push(line),
    run: async (command) => {
      commands.push(command);
      return exited(exitCodeOf(command));
    },
  });
  return { result, commands, lines };
}

describe('installPackages', () => {
  it('adds repositories before installing packages', async () => {
    const request = { packages: ['curl', 'jq'], repositories: { extra: APT_REPOSITORY } };

    const { result, commands, lines } = await runSetup({ request });

    expect(result).toEqual({ status: 'done' });
    expect(commands).toEqual(packageSetupCommands('apt', request));
    expect(commands.map((command) => command.argv.join(' '))).toEqual([
      'tee /etc/apt/sources.list.d/kiln-extra.list',
      'env DEBIAN_FRONTEND=noninteractive apt-get update',
      'env DEBIAN_FRONTEND=noninteractive apt-get install -y curl jq',
    ]);
    expect(lines).toEqual([
      'Adding repositories for apt: extra.',
      'Installing packages with apt: curl jq.',
      `Running as root: tee /etc/apt/sources.list.d/kiln-extra.list, with standard input "deb ${APT_REPOSITORY}\\n"`,
      'Running as root: env DEBIAN_FRONTEND=noninteractive apt-get update',
      'Running as root: env DEBIAN_FRONTEND=noninteractive apt-get install -y curl jq',
      'Package setup succeeded.',
    ]);
  });

  it('picks the package manager of the image', async () => {
    const { commands } = await runSetup({ image: 'alpine/latest', request: { packages: ['git'], repositories: {} } });

    expect(commands.map((command) => command.argv)).toEqual([
      ['apk', 'update'],
      ['apk', 'add', 'git'],
    ]);
  });

  it('stops at the first failing command', async () => {
    const request = { packages: ['curl'], repositories: { extra: APT_REPOSITORY } };

    const { result, commands, lines } = await runSetup({ request }, (command) => (command.argv.includes('update') ? 100 : 0));

    expect(result).toEqual({ status: 'failed', reason: 'package setup failed (apt-get: exit code 100)' });
    expect(commands).toHaveLength(2);
    expect(lines.at(-1)).toBe('Package setup failed: env DEBIAN_FRONTEND=noninteractive apt-get update (exit code 100).');
  });

  it('reports a command that could not start', async () => {
    const commands: SetupCommand[] = [];
    const lines: string[] = [];

    const result = await installPackages({
      image: 'fedora/latest',
      request: { packages: ['gcc'], repositories: {} },
      runnerIsRoot: true,
      buildUser: 'build',
      signal: new AbortController().signal,
      log: (line) => lines.push(line),
      run: async (command) => {
        commands.push(command);
        return { exitCode: null, signal: null, spawnError: 'spawn dnf ENOENT', processGroup: null };
      },
    });

    expect(result).toEqual({ status: 'failed', reason: 'package setup failed (dnf: could not start: spawn dnf ENOENT)' });
    expect(lines.at(-1)).toBe('Package setup failed: dnf -y install gcc (could not start: spawn dnf ENOENT).');
  });

  it('runs nothing without packages or repositories', async () => {
    const { result, commands, lines } = await runSetup({ request: { packages: [], repositories: {} } });

    expect(result).toEqual({ status: 'done' });
    expect(commands).toEqual([]);
    expect(lines).toEqual(['No packages or repositories to install.']);
  });

  it('runs nix commands as the build user', async () => {
    const { commands, lines } = await runSetup({
      image: 'nixos/unstable',
      buildUser: 'builder',
      runnerIsRoot: false,
      request: { packages: ['nixpkgs.hello'], repositories: {} },
    });

    expect(commands.map((command) => command.user)).toEqual(['build', 'build']);
    expect(lines).toContain('Running as user builder: nix-env -iA nixpkgs.hello');
  });

  it('rejects root commands when the runner is not root', async () => {
    const { result, commands, lines } = await runSetup({ runnerIsRoot: false, request: { packages: ['curl'], repositories: {} } });

    expect(result).toEqual({ status: 'failed', reason: 'installing packages needs a runner that runs as root' });
    expect(commands).toEqual([]);
    expect(lines).toEqual(['Cannot install packages: apt needs root, but the runner does not run as root.']);
  });

  it('rejects an invalid repository before running anything', async () => {
    const { result, commands, lines } = await runSetup({ request: { packages: ['curl'], repositories: { extra: 'https://deb.example.org/debian' } } });

    expect(result).toEqual({
      status: 'failed',
      reason: 'invalid packages or repositories: repositories.extra: Expected "url dist component [key-id]" for an apt repository, got 1 words',
    });
    expect(commands).toEqual([]);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^Cannot install packages: repositories\.extra: Expected /);
  });

  it('rejects an image outside the catalog', async () => {
    const { result, commands } = await runSetup({ image: 'freebsd/latest', request: { packages: ['git'], repositories: {} } });

    expect(result).toEqual({ status: 'failed', reason: 'the package manager of image freebsd/latest is unknown' });
    expect(commands).toEqual([]);
  });

  it('hides URL passwords in log lines', async () => {
    const repositories = { extra: 'https://user:hunter2@deb.example.org/debian stable main' };

    const { commands, lines } = await runSetup({ request: { packages: [], repositories } });

    expect(commands[0].input).toContain('hunter2');
    expect(lines.join('\n')).not.toContain('hunter2');
    expect(lines.join('\n')).toContain('https://user:***@deb.example.org/debian');
  });

  it('starts nothing after the job stops', async () => {
    const controller = new AbortController();
    const commands: SetupCommand[] = [];

    const result = await installPackages({
      image: 'debian/stable',
      request: { packages: ['curl'], repositories: {} },
      runnerIsRoot: true,
      buildUser: 'build',
      signal: controller.signal,
      log: () => undefined,
      run: async (command) => {
        commands.push(command);
        controller.abort();
        return exited(0);
      },
    });

    expect(result).toEqual({ status: 'stopped' });
    expect(commands).toHaveLength(1);
  });
});

/**
 * Whether the runner can run here as root with `nobody` as its build user,
 * as the container runs it with `build`. That needs root, runuser and the
 * `nobody` account.
 */
const canSwitchToNobody = process.getuid?.() === 0 && spawnSync('runuser', ['-u', 'nobody', '--', 'true']).status === 0;

/** The programs that the fake PATH provides. The test checks that every setup command runs one of them, never a real one. */
const FAKE_PROGRAMS = ['tee', 'apt-get'];

interface ContainerSetup {
  api: FakeRunnerApi;
  folders: RunnerFolders;
  /** PATH for the runner, with the fake programs first. */
  path: string;
  /** File to which each fake program appends one line per call. */
  calls: string;
}

/**
 * Starts a fake API for a debian/stable job and writes fake `tee` and
 * `apt-get` scripts that append `uid=<uid> home=<HOME> <program> <args>` to
 * the calls file. The fake apt-get prints a line and exits with
 * `aptExitCode` for `install`. The build's folders are made traversable, so
 * that the `nobody` account can reach its HOME.
 */
async function setUpContainerRun(job: Partial<ClaimedJob> & { tasks: ClaimedTask[] }, aptExitCode = 0): Promise<ContainerSetup> {
  const api = await startFakeRunnerApi({ job });
  cleanups.push(() => api.close());
  const folders = await makeRunnerFolders();
  cleanups.push(() => folders.remove());
  await chmod(path.dirname(folders.home), 0o755);

  const fakes = await mkdtemp(path.join(os.tmpdir(), 'kiln-fake-packages-'));
  cleanups.push(() => rm(fakes, { recursive: true, force: true }));
  const bin = path.join(fakes, 'bin');
  await mkdir(bin);
  const calls = path.join(fakes, 'calls');
  await writeFile(calls, '');
  const record = `printf 'uid=%s home=%s %s\\n' "$(id -u)" "$HOME" "$*" >> ${quoteShellWord(calls)}`;
  await writeFile(
    path.join(bin, 'tee'),
    ['#!/bin/sh', `input=$(cat)`, record.replace('"$*"', '"tee $* input=$input"'), ''].join('\n'),
    { mode: 0o755 },
  );
  await writeFile(
    path.join(bin, 'apt-get'),
    [
      '#!/bin/sh',
      record.replace('"$*"', '"apt-get DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*"'),
      'echo "fake apt-get $1"',
      `if [ "$1" = install ]; then exit ${aptExitCode}; fi`,
      '',
    ].join('\n'),
    { mode: 0o755 },
  );

  return { api, folders, path: `${bin}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`, calls };
}

/** Returns the programs that the setup commands of a request run, looking past `env NAME=value`. */
function programsOf(commands: SetupCommand[]): string[] {
  return commands.map((command) => (command.argv[0] === 'env' ? command.argv.find((word, index) => index > 0 && !word.includes('='))! : command.argv[0]));
}

const setupLog = async (api: FakeRunnerApi): Promise<string> => (await api.readLog({ log: 'setup' }))?.toString('utf8') ?? '';

describe.skipIf(!canSwitchToNobody)('runner package setup in a container', () => {
  const request = { packages: ['curl', 'jq'], repositories: { extra: APT_REPOSITORY } };
  const nobodyUid = canSwitchToNobody ? execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim() : '';

  it('fakes every program of the setup', () => {
    // Guards the tests below, because a program without a fake would change this machine's system.
    expect(programsOf(packageSetupCommands('apt', request)).every((program) => FAKE_PROGRAMS.includes(program))).toBe(true);
  });

  it('installs as root before the tasks run', async () => {
    const { api, folders, path: fakePath, calls } = await setUpContainerRun({
      ...request,
      tasks: [{ name: 'check', script: 'id -u > ~/task-uid\necho "$HOME" > ~/task-home' }],
    });

    const result = await runRunner(api, folders, { KILN_BUILD_USER: 'nobody', PATH: fakePath });

    expect(result.code).toBe(0);
    expect(api.violations).toEqual([]);
    expect(api.completion).toEqual({ status: 'success' });
    const rootHome = os.userInfo().homedir;
    expect((await readFile(calls, 'utf8')).trimEnd().split('\n')).toEqual([
      `uid=0 home=${rootHome} tee /etc/apt/sources.list.d/kiln-extra.list input=deb ${APT_REPOSITORY}`,
      `uid=0 home=${rootHome} apt-get DEBIAN_FRONTEND=noninteractive update`,
      `uid=0 home=${rootHome} apt-get DEBIAN_FRONTEND=noninteractive install -y curl jq`,
    ]);
    expect((await readFile(path.join(folders.home, 'task-uid'), 'utf8')).trim()).toBe(nobodyUid);
    expect((await readFile(path.join(folders.home, 'task-home'), 'utf8')).trim()).toBe(folders.home);

    const setup = await setupLog(api);
    expect(setup).toContain('Build commands run as user nobody, and packages and repositories are installed as root.');
    expect(setup).not.toContain('NOTE: Packages not installed');
    expect(setup).toContain('Running as root: env DEBIAN_FRONTEND=noninteractive apt-get install -y curl jq\nfake apt-get install\n');
    const order = ['No secrets to install.', 'Adding repositories for apt: extra.', 'Running as root: tee ', 'apt-get update', 'Package setup succeeded.', 'Running task check.'];
    const positions = order.map((text) => setup.indexOf(text));
    expect(positions.every((position) => position >= 0)).toBe(true);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
  });

  it('fails the job when an install fails', async () => {
    const { api, folders, path: fakePath, calls } = await setUpContainerRun(
      { ...request, tasks: [{ name: 'never', script: 'touch ~/never-ran' }] },
      100,
    );

    const result = await runRunner(api, folders, { KILN_BUILD_USER: 'nobody', PATH: fakePath });

    expect(result.code).toBe(1);
    expect(api.violations).toEqual([]);
    expect(api.taskStatus('never')).toBe('skipped');
    expect(api.completion).toEqual({ status: 'failed', reason: 'package setup failed (apt-get: exit code 100)' });
    expect((await readFile(calls, 'utf8')).trimEnd().split('\n')).toHaveLength(3);
    const setup = await setupLog(api);
    expect(setup).toContain('fake apt-get install\n');
    expect(setup).toContain('Package setup failed: env DEBIAN_FRONTEND=noninteractive apt-get install -y curl jq (exit code 100).');
    expect(setup).toContain('Skipping task(s): never.');
    expect(await readFile(path.join(folders.home, 'never-ran')).catch(() => null)).toBeNull();
  });

  it('installs nothing without a build user', async () => {
    const { api, folders, path: fakePath, calls } = await setUpContainerRun({ ...request, tasks: [{ name: 'only', script: 'true' }] });

    const result = await runRunner(api, folders, { PATH: fakePath });

    expect(result.code).toBe(0);
    expect(await readFile(calls, 'utf8')).toBe('');
    const setup = await setupLog(api);
    expect(setup).toContain('NOTE: Packages not installed: curl jq');
    expect(setup).toContain('NOTE: Repositories not added: extra');
  });
});
