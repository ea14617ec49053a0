import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../lib/cli/main.js';
import { startTestStack, type TestStack } from './support/local-stack.js';

describe('kiln CLI', () => {
  let stack: TestStack;
  let folder: string;
  let env: NodeJS.ProcessEnv;

  async function run(...argv: string[]): Promise<{ code: number; output: string }> {
    let output = '';
    const code = await runCli(argv, (text) => (output += text), env);

    return { code, output };
  }

  beforeAll(async () => {
    stack = await startTestStack();
    folder = await mkdtemp(path.join(os.tmpdir(), 'kiln-cli-'));
    env = { KILN_URL: stack.apiUrl, KILN_DATA_DIR: stack.dataDir };
  });
  afterAll(async () => {
    await stack.destroy();
    await rm(folder, { recursive: true, force: true });
  });

  it('submits a manifest and prints the job id and URL', async () => {
    const manifest = path.join(folder, 'pending.yml');
    await writeFile(manifest, 'image: alpine/latest\ntasks:\n  - hi: echo hi\n');

    const { code, output } = await run('submit', manifest, '--no-execute', '--note', 'from the CLI', '--tag', 'cli');
    const id = Number(/^Job (\d+): /.exec(output)?.[1]);
    const job = await stack.getJob(id);

    expect(code).toBe(0);
    expect(output).toContain(`${stack.apiUrl}/api/jobs/${id}`);
    expect(job.status).toBe('pending');
    expect(job.note).toBe('from the CLI');
    expect(job.tags).toBe('cli');
  });

  it('follows a build to success and exits 0', async () => {
    const manifest = path.join(folder, 'ok.yml');
    await writeFile(manifest, 'image: alpine/latest\ntasks:\n  - greet: echo "hello from the build"\n');

    const { code, output } = await run('submit', manifest, '--follow');

    expect(code).toBe(0);
    expect(output).toContain('hello from the build');
    expect(output).toMatch(/job \d+ success/);
  });

  it('follows a failing build and exits 1', async () => {
    const manifest = path.join(folder, 'fail.yml');
    await writeFile(manifest, 'image: alpine/latest\ntasks:\n  - broken: exit 7\n');

    const { code, output } = await run('submit', manifest, '--follow');

    expect(code).toBe(1);
    expect(output).toMatch(/job \d+ failed/);
  });

  it('shows a job with its tasks', async () => {
    const job = await stack.submit({ manifest: 'image: alpine/latest\ntasks:\n  - one: echo 1\n  - two: echo 2\n', execute: false });

    const { code, output } = await run('show', String(job.id));

    expect(code).toBe(0);
    expect(output).toContain(`Job ${job.id} pending`);
    expect(output).toMatch(/task one\s+pending/);
    expect(output).toMatch(/task two\s+pending/);
  });

  it('reports a bad manifest with its field', async () => {
    const manifest = path.join(folder, 'bad.yml');
    await writeFile(manifest, 'image: freebsd/latest\ntasks:\n  - a: echo\n');

    await expect(run('submit', manifest)).rejects.toThrow(/image: .*Linux containers/);
  });

  it('rejects an unknown command', async () => {
    await expect(run('launch')).rejects.toThrow(/unknown command "launch"/);
  });
});
