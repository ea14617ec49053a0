import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { stageRunnerImage } from '../infra/runner-image/stage.js';

const run = promisify(execFile);
const IMAGE_DIR = fileURLToPath(new URL('../infra/runner-image/', import.meta.url));

/** A runner stand-in that prints the name the entry point gave it. */
const FAKE_RUNNER = "process.stdout.write(`runner name: ${process.env.KILN_RUNNER_NAME ?? 'none'}\\n`);\n";

describe('runner image entry point', () => {
  let directory: string;
  let server: Server;
  let metadataUrl: string;
  let requests: string[];
  let status: number;

  beforeAll(async () => {
    directory = mkdtempSync(path.join(os.tmpdir(), 'kiln-entrypoint-'));
    copyFileSync(path.join(IMAGE_DIR, 'entrypoint.mjs'), path.join(directory, 'entrypoint.mjs'));
    writeFileSync(path.join(directory, 'runner.mjs'), FAKE_RUNNER);

    // A stand-in for the ECS task metadata endpoint, on loopback.
    server = createServer((request, response) => {
      requests.push(request.url ?? '');
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ TaskARN: 'arn:aws:ecs:eu-west-1:111122223333:task/kiln-builds/0f1e2d3c4b5a69788796a5b4c3d2e1f0' }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    metadataUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v4/container-1`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(directory, { recursive: true, force: true });
  });

  beforeEach(() => {
    requests = [];
    status = 200;
  });

  function start(env: Record<string, string>) {
    return run(process.execPath, [path.join(directory, 'entrypoint.mjs')], { env: { PATH: process.env.PATH ?? '', ...env } });
  }

  it('names the runner after its ECS task', async () => {
    const { stdout } = await start({ ECS_CONTAINER_METADATA_URI_V4: metadataUrl });

    expect(stdout).toBe('runner name: 0f1e2d3c4b5a69788796a5b4c3d2e1f0\n');
    expect(requests).toEqual(['/v4/container-1/task']);
  });

  it('keeps a name that is already set', async () => {
    const { stdout } = await start({ ECS_CONTAINER_METADATA_URI_V4: metadataUrl, KILN_RUNNER_NAME: 'given' });

    expect(stdout).toBe('runner name: given\n');
    expect(requests).toEqual([]);
  });

  it('starts without a name outside ECS', async () => {
    const { stdout } = await start({});

    expect(stdout).toBe('runner name: none\n');
  });

  it('starts without a name when the metadata fails', async () => {
    status = 500;

    const { stdout, stderr } = await start({ ECS_CONTAINER_METADATA_URI_V4: metadataUrl });

    expect(stdout).toBe('runner name: none\n');
    expect(JSON.parse(stderr)).toEqual({
      level: 'error',
      msg: 'failed to read the ECS task id',
      err: 'the ECS task metadata endpoint returned 500',
    });
  });
});

describe('stageRunnerImage', () => {
  let root: string;

  beforeEach(() => {
    root = mkdtempSync(path.join(os.tmpdir(), 'kiln-stage-'));
  });

  afterEach(() => {
    rmSync(root, { recursive: true, force: true });
  });

  it('stages the bundle and image files', () => {
    const directory = stageRunnerImage(root);

    expect(readdirSync(directory).sort()).toEqual(['Dockerfile', 'entrypoint.mjs', 'runner.mjs', 'runner.mjs.map', 'setup-image.sh']);
  });

  it('reuses the folder of identical contents', () => {
    const first = stageRunnerImage(root);
    const second = stageRunnerImage(root);

    expect(second).toBe(first);
    expect(readdirSync(root)).toEqual([path.basename(first)]);
  });

  it('bundles a runner that runs without node_modules', async () => {
    const directory = stageRunnerImage(root);
    const result = await run(process.execPath, [path.join(directory, 'runner.mjs')], { env: { PATH: process.env.PATH ?? '' }, cwd: root }).catch(
      (error: { code: number; stderr: string }) => error,
    );

    // With no job to run, the runner exits with its "environment incomplete" status and names what is missing.
    expect((result as { code: number }).code).toBe(2);
    expect((result as { stderr: string }).stderr).toContain('KILN_API_URL');
    expect(existsSync(path.join(directory, 'node_modules'))).toBe(false);
  });
});
