import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { putArtifact } from '../lib/runner/artifacts.js';
import type { ClaimedJob, ClaimedTask, LogUrlRequest } from '../lib/runner/protocol.js';
import { makeRunnerFolders, runRunner, startFakeRunnerApi, type FakeRunnerApi, type RunnerFolders } from './support/fake-runner-api.js';

const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  while (cleanups.length > 0) {
    await cleanups.pop()!();
  }
});

/** Creates the runner's folders first, so a job can name paths inside its HOME. */
async function setUp(job: (folders: RunnerFolders) => Partial<ClaimedJob> & { tasks: ClaimedTask[] }): Promise<{ api: FakeRunnerApi; folders: RunnerFolders }> {
  const folders = await makeRunnerFolders();
  cleanups.push(() => folders.remove());
  const api = await startFakeRunnerApi({ job: job(folders) });
  cleanups.push(() => api.close());
  return { api, folders };
}

async function logText(api: FakeRunnerApi, request: LogUrlRequest): Promise<string> {
  const bytes = await api.readLog(request);
  if (bytes === null) {
    throw new Error(`log ${JSON.stringify(request)} was never uploaded`);
  }
  return bytes.toString('utf8');
}

describe('runner artifacts', () => {
  it('uploads artifacts after every task succeeded', async () => {
    const { api, folders } = await setUp((folders) => ({
      artifacts: ['out/report.txt', '~/random.bin', 'empty.txt', path.join(folders.home, 'absolute.txt')],
      tasks: [
        { name: 'build', script: 'mkdir -p out\necho "report of job $JOB_ID" > out/report.txt\nhead -c 3000000 /dev/urandom > random.bin' },
        { name: 'more', script: ': > empty.txt\necho absolute > ~/absolute.txt' },
      ],
    }));

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    expect(api.violations).toEqual([]);
    expect(api.completion).toEqual({ status: 'success' });
    const absolute = path.join(folders.home, 'absolute.txt');
    expect(api.uploadedArtifacts).toEqual([
      { path: 'out/report.txt', size: 17 },
      { path: '~/random.bin', size: 3_000_000 },
      { path: 'empty.txt', size: 0 },
      { path: absolute, size: 9 },
    ]);
    const files: Array<[string, string]> = [
      ['out/report.txt', 'out/report.txt'],
      ['~/random.bin', 'random.bin'],
      ['empty.txt', 'empty.txt'],
      [absolute, 'absolute.txt'],
    ];
    for (const [artifact, file] of files) {
      const uploaded = await api.readArtifact(artifact);
      expect(uploaded?.equals(await readFile(path.join(folders.home, file))), artifact).toBe(true);
    }

    const setup = await logText(api, { log: 'setup' });
    expect(setup).toContain('Uploading artifact out/report.txt (17 bytes).\nUploaded artifact out/report.txt.\n');
    expect(setup).toContain('Uploading artifact ~/random.bin (2.9 MiB (3000000 bytes)).');
    expect(setup).toContain('Uploading artifact empty.txt (0 bytes).');
    expect(setup).toContain(`Uploaded artifact ${absolute}.`);
    expect(setup).not.toContain('Artifacts are not collected');
    expect(setup.trimEnd().split('\n').at(-1)).toBe('Job succeeded.');
  });

  it('uploads artifacts after complete-build', async () => {
    const { api, folders } = await setUp(() => ({
      artifacts: ['early.txt'],
      tasks: [
        { name: 'first', script: 'echo early > early.txt\ncomplete-build' },
        { name: 'second', script: 'true' },
      ],
    }));

    const result = await runRunner(api, folders);

    expect(result.code).toBe(0);
    expect(api.violations).toEqual([]);
    expect(api.taskStatus('second')).toBe('skipped');
    expect(api.uploadedArtifacts).toEqual([{ path: 'early.txt', size: 6 }]);
    expect((await api.readArtifact('early.txt'))?.toString()).toBe('early\n');
  });

  it('uploads nothing after a failed task', async () => {
    const { api, folders } = await setUp(() => ({
      artifacts: ['made.txt'],
      tasks: [{ name: 'broken', script: 'echo made > made.txt\nexit 4' }],
    }));

    const result = await runRunner(api, folders);

    expect(result.code).toBe(1);
    expect(api.violations).toEqual([]);
    expect(api.completion).toEqual({ status: 'failed', reason: 'task broken failed (exit code 4)' });
    expect(api.artifactRequests).toEqual([]);
    expect(await logText(api, { log: 'setup' })).not.toContain('artifact');
  });

  it('fails before uploading when an artifact is invalid', async () => {
    const { api, folders } = await setUp(() => ({
      artifacts: ['good.txt', 'missing.txt', 'folder', 'huge.bin', '/etc/hostname', '../escape.txt'],
      tasks: [
        {
          name: 'make',
          script: 'echo good > good.txt\nmkdir folder\ntruncate -s 1073741825 huge.bin\necho escape > ../escape.txt',
        },
      ],
    }));

    const result = await runRunner(api, folders);

    expect(result.code).toBe(1);
    expect(api.violations).toEqual([]);
    expect(api.taskStatus('make')).toBe('success');
    expect(api.artifactRequests).toEqual([]);
    expect(api.completion).toEqual({
      status: 'failed',
      reason: '5 of 6 artifact(s) cannot be uploaded: missing.txt, folder, huge.bin, /etc/hostname, ../escape.txt',
    });
    const setup = await logText(api, { log: 'setup' });
    expect(setup).toContain('Artifact missing.txt cannot be uploaded: the file does not exist.');
    expect(setup).toContain('Artifact folder cannot be uploaded: it is a folder, not a regular file.');
    expect(setup).toContain(
      'Artifact huge.bin cannot be uploaded: the file has 1.0 GiB (1073741825 bytes), more than the limit of 1.0 GiB (1073741824 bytes).',
    );
    expect(setup).toContain(`Artifact /etc/hostname cannot be uploaded: the path is outside the build's HOME ${folders.home}`);
    expect(setup).toContain(`Artifact ../escape.txt cannot be uploaded: the path is outside the build's HOME ${folders.home}`);
    expect(setup).not.toContain('Uploading artifact');
  });

  it('fails a PUT whose file changed size', async () => {
    const folder = await mkdtemp(path.join(os.tmpdir(), 'kiln-artifact-put-'));
    cleanups.push(() => rm(folder, { recursive: true, force: true }));
    const file = path.join(folder, 'artifact.bin');
    await writeFile(file, 'ten bytes!');
    const received: number[] = [];
    const server = http.createServer((request, response) => {
      let length = 0;
      request.on('data', (chunk: Buffer) => (length += chunk.length));
      request.on('end', () => {
        received.push(length);
        response.end();
      });
      request.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const target = { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/artifact`, headers: {}, expiresAt: '' };
    const user = { name: 'builder', ids: null };
    const signal = new AbortController().signal;

    await putArtifact(target, { path: 'artifact.bin', file, size: 10 }, user, signal);
    await expect(putArtifact(target, { path: 'artifact.bin', file, size: 12 }, user, signal)).rejects.toThrow('ended after 10 of the 12 bytes');
    await expect(putArtifact(target, { path: 'artifact.bin', file, size: 4 }, user, signal)).rejects.toThrow('longer than the 4 bytes');

    expect(received).toEqual([10]);
  });
});
