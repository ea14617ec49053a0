import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchLog, isEnded, startTestStack, type TestStack } from './support/local-stack.js';

const SECRET_LINES = ['first-line-of-the-secret-9f2c', 'second line with spaces 77ab'];
const SECRET_VALUE = `${SECRET_LINES.join('\n')}\n`;

interface ArtifactPage {
  next: string | null;
  results: Array<{ id: number; name: string; path: string; size: number; url: string; created: string }>;
  total: number;
}

describe('secrets and artifacts end to end', () => {
  let stack: TestStack;
  let secretId: string;

  beforeAll(async () => {
    stack = await startTestStack();
    const response = await stack.api('POST', '/api/secrets', {
      body: { name: 'deploy-config', type: 'plaintext_file', secret: SECRET_VALUE, path: '~/deploy.conf', mode: '600' },
    });
    ({ id: secretId } = (await response.json()) as { id: string });
  });
  afterAll(async () => {
    await stack.destroy();
  });

  async function allLogs(jobId: number): Promise<string> {
    const job = await stack.getJob(jobId);
    const logs = [await fetchLog(job.setup_log)];
    for (const task of job.tasks) logs.push(await fetchLog(task.log));

    return logs.join('\n');
  }

  it('masks a secret printed by echo, set -x and cat', async () => {
    const manifest = `image: alpine/latest
secrets:
  - deploy-config
tasks:
  - show: |
      stat -c '%a' ~/deploy.conf
      cat ~/deploy.conf
      value=$(head -n 1 ~/deploy.conf)
      echo "echoed: $value"
      true "$value"
`;
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);
    const logs = await allLogs(job.id);

    expect(job.status).toBe('success');
    for (const line of SECRET_LINES) expect(logs).not.toContain(line);
    expect(logs).toContain('echoed: [masked]');
    expect(logs).toContain('+ true [masked]');
    expect(logs).toContain('+ value=[masked]');
    expect(await fetchLog(job.tasks[0].log)).toMatch(/^600$/m);
  });

  it('finds a secret by its id', async () => {
    const manifest = `image: alpine/latest\nsecrets:\n  - ${secretId}\ntasks:\n  - check: test -s ~/deploy.conf\n`;
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);

    expect(job.status).toBe('success');
  });

  it('gives no secret to a job submitted with secrets false', async () => {
    const manifest = 'image: alpine/latest\nsecrets:\n  - deploy-config\ntasks:\n  - check: test ! -e ~/deploy.conf\n';
    const submitted = await stack.submit({ manifest, secrets: false });
    const job = await stack.waitForJob(submitted.id, isEnded);

    expect(job.status).toBe('success');
    expect(await allLogs(job.id)).not.toContain(SECRET_LINES[0]);
  });

  it('fails a job that names a secret its owner does not have', async () => {
    const manifest = 'image: alpine/latest\nsecrets:\n  - no-such-secret\ntasks:\n  - never: echo never\n';
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);

    expect(job.status).toBe('failed');
    expect(job.tasks[0].status).toBe('skipped');
    expect(await fetchLog(job.setup_log)).toContain('no-such-secret');
  });

  it('lists and serves the artifacts of a successful build', async () => {
    const manifest = `image: alpine/latest
artifacts:
  - out/report.txt
  - build.tar
tasks:
  - make: |
      mkdir -p out
      printf 'report body\\n' > out/report.txt
      head -c 5000 /dev/zero > build.tar
`;
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);
    const response = await stack.api('GET', `/api/jobs/${job.id}/artifacts`);
    const page = (await response.json()) as ArtifactPage;

    expect(job.status).toBe('success');
    expect(page.total).toBe(2);
    expect(page.next).toBeNull();
    const report = page.results.find((artifact) => artifact.name === 'report.txt')!;
    expect(report.path).toBe('out/report.txt');
    expect(report.size).toBe(12);
    expect(await (await fetch(report.url)).text()).toBe('report body\n');
    const tarball = page.results.find((artifact) => artifact.name === 'build.tar')!;
    expect(tarball.size).toBe(5000);
    expect((await (await fetch(tarball.url)).arrayBuffer()).byteLength).toBe(5000);
  });

  it('fails the job when an artifact is missing', async () => {
    const manifest = 'image: alpine/latest\nartifacts:\n  - missing.txt\ntasks:\n  - nothing: "true"\n';
    const submitted = await stack.submit({ manifest });
    const job = await stack.waitForJob(submitted.id, isEnded);
    const page = (await (await stack.api('GET', `/api/jobs/${job.id}/artifacts`)).json()) as ArtifactPage;

    expect(job.status).toBe('failed');
    expect(await fetchLog(job.setup_log)).toContain('missing.txt');
    expect(page.total).toBe(0);
  });

  it('rejects more than 8 artifacts at submit', async () => {
    const artifacts = Array.from({ length: 9 }, (_, index) => `  - file${index}.txt`).join('\n');
    const response = await stack.api('POST', '/api/jobs', {
      body: { manifest: `image: alpine/latest\nartifacts:\n${artifacts}\ntasks:\n  - a: "true"\n` },
    });
    const result = (await response.json()) as { errors: Array<{ field?: string; reason: string }> };

    expect(response.status).toBe(400);
    expect(result.errors[0].field).toBe('artifacts');
    expect(result.errors[0].reason).toMatch(/8/);
  });
});
