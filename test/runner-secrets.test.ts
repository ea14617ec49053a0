import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClaimedJob, ClaimedTask, LogUrlRequest, RunnerSecret } from '../lib/runner/protocol.js';
import { MASK } from '../lib/runner/secret-masker.js';
import { makeRunnerFolders, runRunner, startFakeRunnerApi, type FakeRunnerApi, type RunnerFolders } from './support/fake-runner-api.js';
import { startGitDaemon } from './support/git-daemon.js';

const cleanups: Array<() => Promise<void>> = [];
const gpgInstalled = spawnSync('gpg', ['--version'], { stdio: 'ignore' }).status === 0;

afterEach(async () => {
  while (cleanups.length > 0) {
    await cleanups.pop()!();
  }
});

async function setUp(
  job: Partial<ClaimedJob> & { tasks: ClaimedTask[] },
  secrets: RunnerSecret[] | undefined,
  options: { withoutSecretsRoute?: boolean } = {},
): Promise<{ api: FakeRunnerApi; folders: RunnerFolders }> {
  const api = await startFakeRunnerApi({ job, secrets, ...options });
  cleanups.push(() => api.close());
  const folders = await makeRunnerFolders();
  cleanups.push(() => folders.remove());
  return { api, folders };
}

async function temporaryFolder(): Promise<string> {
  const folder = await mkdtemp(path.join(os.tmpdir(), 'kiln-secrets-'));
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

function secret(fields: Omit<RunnerSecret, 'id' | 'value'> & { value: string | Buffer }): RunnerSecret {
  return { id: randomUUID(), ...fields, value: Buffer.from(fields.value).toString('base64') };
}

/** Returns text shaped like an OpenSSH private key, with random base64 lines that appear nowhere else. */
function fakePrivateKey(): string {
  const lines = Array.from({ length: 5 }, () => randomBytes(52).toString('base64'));
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines.join('\n')}\n-----END OPENSSH PRIVATE KEY-----\n`;
}

/** Returns the lines of a value that the runner promises to mask: trimmed, 4 bytes or longer. */
function maskedLines(value: string): string[] {
  return value
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length >= 4);
}

function fileMode(stats: { mode: number }): number {
  return stats.mode & 0o777;
}

describe('runner secrets', () => {
  it('installs secrets and masks them in every log', async () => {
    const credentials = 'user = deploy-bot\npassword = first-secret-line-alpha\ntoken = second-secret-line-beta\n';
    const firstKey = fakePrivateKey();
    const secondKey = fakePrivateKey();
    const splitToken = 'hunter2-split-token';
    const secrets = [
      secret({ name: 'credentials', type: 'plaintext_file', value: credentials, path: '~/.config/kiln/credentials', mode: 0o640 }),
      secret({ name: 'deploy', type: 'ssh_key', value: firstKey }),
      secret({ name: 'mirror', type: 'ssh_key', value: secondKey }),
      secret({ name: 'split', type: 'plaintext_file', value: `${splitToken}\n`, path: 'split-token' }),
    ];
    const [credentialsSecret, deployKey, mirrorKey] = secrets;
    const { api, folders } = await setUp(
      {
        tasks: [
          {
            name: 'print',
            script: [
              'echo "by echo: $(cat ~/.config/kiln/credentials)"',
              'X=$(cat ~/.config/kiln/credentials); true "$X"',
              'cat ~/.config/kiln/credentials',
              'cat ~/.ssh/id_rsa',
              `cat ~/.ssh/${mirrorKey.id}`,
            ].join('\n'),
          },
          { name: 'split', script: "set +x\nprintf 'hunter2-sp'; sleep 0.2; printf 'lit-token\\n'\necho after-split" },
        ],
      },
      secrets,
    );

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    expect(api.violations).toEqual([]);
    expect(api.secretsRequests).toBe(1);

    const credentialsFile = path.join(folders.home, '.config', 'kiln', 'credentials');
    expect(await readFile(credentialsFile, 'utf8')).toBe(credentials);
    expect(fileMode(await stat(credentialsFile))).toBe(0o640);
    expect(fileMode(await stat(path.join(folders.home, '.ssh')))).toBe(0o700);
    for (const [file, value] of [
      ['id_rsa', firstKey],
      [deployKey.id, firstKey],
      [mirrorKey.id, secondKey],
    ]) {
      expect(await readFile(path.join(folders.home, '.ssh', file), 'utf8'), file).toBe(value);
      expect(fileMode(await stat(path.join(folders.home, '.ssh', file))), file).toBe(0o600);
    }
    expect((await readdir(path.join(folders.home, '.ssh'))).sort()).toEqual([deployKey.id, mirrorKey.id, 'id_rsa'].sort());
    expect(await readFile(path.join(folders.home, 'split-token'), 'utf8')).toBe(`${splitToken}\n`);

    const logs = {
      setup: await logText(api, { log: 'setup' }),
      print: await logText(api, { log: 'task', task: 'print' }),
      split: await logText(api, { log: 'task', task: 'split' }),
    };
    const secretLines = [...maskedLines(credentials), ...maskedLines(firstKey), ...maskedLines(secondKey), splitToken];
    for (const [name, text] of Object.entries(logs)) {
      for (const line of secretLines) {
        expect(text, `${name} log contains ${line}`).not.toContain(line);
      }
    }

    expect(logs.print).toContain(`by echo: ${MASK}`);
    expect(logs.print).toContain(`+ X='${MASK}`);
    expect(logs.print).toContain(`+ true '${MASK}`);
    expect(logs.print).toContain(`+ cat ${credentialsFile}\n${MASK}\n`);
    expect(logs.print).toContain(`+ cat ${path.join(folders.home, '.ssh', 'id_rsa')}\n${MASK}\n`);
    expect(logs.split).toContain(`${MASK}\nafter-split\n`);

    expect(logs.setup).toContain('Installing 4 secret(s).');
    expect(logs.setup).toContain(`Wrote file secret "credentials" (id ${credentialsSecret.id}) to ~/.config/kiln/credentials with mode 640.`);
    expect(logs.setup).toContain(`Installed SSH key "deploy" (id ${deployKey.id}) as ~/.ssh/${deployKey.id} and ~/.ssh/id_rsa.`);
    expect(logs.setup).toContain(`Installed SSH key "mirror" (id ${mirrorKey.id}) as ~/.ssh/${mirrorKey.id}.`);
  });

  it('installs nothing without secrets', async () => {
    const { api, folders } = await setUp({ tasks: [{ name: 'look', script: 'ls -A ~' }] }, []);

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    expect(api.violations).toEqual([]);
    expect(api.secretsRequests).toBe(1);
    expect(existsSync(path.join(folders.home, '.ssh'))).toBe(false);
    expect(existsSync(path.join(folders.home, '.gnupg'))).toBe(false);
    const setup = await logText(api, { log: 'setup' });
    expect(setup).toContain('No secrets to install.');
    expect(setup).not.toContain('Installing');
    expect(await logText(api, { log: 'task', task: 'look' })).not.toContain(MASK);
  });

  it('fails the job when secrets cannot be fetched', async () => {
    const { api, folders } = await setUp({ tasks: [{ name: 'only', script: 'true' }] }, undefined, { withoutSecretsRoute: true });

    const result = await runRunner(api, folders);

    expect(result.code).toBe(1);
    expect(api.completion?.status).toBe('failed');
    expect(await logText(api, { log: 'setup' })).toContain('Fetching the secrets failed');
  });

  it('masks secrets in setup output', async () => {
    const root = await temporaryFolder();
    const daemon = await startGitDaemon(root);
    cleanups.push(() => daemon.close());
    const token = 'private-repository-token-31337';
    const source = `${daemon.url}/${token}.git`;
    const { api, folders } = await setUp(
      { sources: [source], tasks: [{ name: 'never', script: 'true' }] },
      [secret({ name: 'token', type: 'plaintext_file', value: token, path: '~/.token' })],
    );

    const result = await runRunner(api, folders);

    expect(result.code).toBe(1);
    const setup = await logText(api, { log: 'setup' });
    expect(setup).not.toContain(token);
    expect(setup).toContain(`Cloning ${daemon.url}/${MASK}.git failed (git: exit code 128).`);
    expect(setup).toMatch(/fatal: .*\[masked\]\.git/);
    expect(api.completion?.reason).toBe(`cloning ${daemon.url}/${MASK}.git failed (git: exit code 128)`);
    expect(result.stderr).not.toContain(token);
  });

  it('rejects a file secret outside HOME', async () => {
    const outside = path.join(await temporaryFolder(), 'outside-home');
    const fileSecret = secret({ name: 'stray', type: 'plaintext_file', value: 'stray-secret-value', path: outside });
    const { api, folders } = await setUp({ tasks: [{ name: 'never', script: 'touch ~/never-ran' }] }, [fileSecret]);

    const result = await runRunner(api, folders);

    expect(result.code).toBe(1);
    expect(api.violations).toEqual([]);
    expect(existsSync(outside)).toBe(false);
    expect(existsSync(path.join(folders.home, 'never-ran'))).toBe(false);
    expect(api.taskStatus('never')).toBe('skipped');
    expect(api.completion?.status).toBe('failed');
    expect(api.completion?.reason).toContain(`file secret "stray" (id ${fileSecret.id}) cannot be written to ${JSON.stringify(outside)}`);
    expect(await logText(api, { log: 'setup' })).toContain("outside the build's HOME");
  });

  it('rejects a value that is not base64', async () => {
    const broken = { ...secret({ name: 'broken', type: 'ssh_key', value: 'x' }), value: 'not base64!' };
    const { api, folders } = await setUp({ tasks: [{ name: 'never', script: 'true' }] }, [broken]);

    const result = await runRunner(api, folders);

    expect(result.code).toBe(1);
    expect(api.completion?.reason).toBe(`the service sent invalid secrets: SSH key "broken" (id ${broken.id}) has a value that is not base64`);
  });

  it('skips a PGP key without gpg', async () => {
    // The runner looks gpg up on its own PATH, which here contains only bash.
    const bin = await temporaryFolder();
    await symlink(execFileSync('bash', ['-c', 'command -v bash'], { encoding: 'utf8' }).trim(), path.join(bin, 'bash'));
    const key = secret({ name: 'signing', type: 'pgp_key', value: 'pgp-key-without-gpg' });
    const { api, folders } = await setUp({ tasks: [{ name: 'only', script: 'true' }] }, [key]);

    const result = await runRunner(api, folders, { PATH: bin });

    expect(result.code).toBe(0);
    expect(await logText(api, { log: 'setup' })).toContain(`Skipping PGP key "signing" (id ${key.id}): gpg is not installed`);
  });

  it.runIf(gpgInstalled)('imports a PGP key and stops gpg-agent', async () => {
    const gnupgHome = await temporaryFolder();
    const gpg = (...args: string[]): string =>
      execFileSync('gpg', ['--homedir', gnupgHome, '--batch', '--pinentry-mode', 'loopback', '--passphrase', '', ...args], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    gpg('--quick-gen-key', 'Kiln Runner Test <runner-test@kiln.invalid>', 'ed25519', 'sign', 'never');
    const armored = gpg('--armor', '--export-secret-keys');
    execFileSync('gpgconf', ['--homedir', gnupgHome, '--kill', 'all']);
    const key = secret({ name: 'signing', type: 'pgp_key', value: armored });
    const { api, folders } = await setUp({ tasks: [{ name: 'list', script: 'gpg --batch --list-secret-keys' }] }, [key]);

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    expect(await logText(api, { log: 'task', task: 'list' })).toContain('runner-test@kiln.invalid');
    const setup = await logText(api, { log: 'setup' });
    expect(setup).toContain(`Imported PGP key "signing" (id ${key.id}).`);
    for (const line of maskedLines(armored)) {
      expect(setup).not.toContain(line);
    }
    // gpgconf sends the agent a request to exit, and the agent exits shortly after, so this polls until it is gone.
    while ((await agentsWithHome(folders.home)).length > 0) {
      await sleep(50);
    }
  });
});

/** Returns the pids of running gpg-agent processes whose HOME is `home`. */
async function agentsWithHome(home: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    const commandLine = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const environment = await readFile(`/proc/${entry}/environ`, 'utf8').catch(() => '');
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const running = !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
    if (running && commandLine.startsWith('gpg-agent') && environment.split('\0').includes(`HOME=${home}`)) {
      pids.push(Number(entry));
    }
  }
  return pids;
}
