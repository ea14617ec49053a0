/**
 * Log throughput of the runner with and without secrets to mask:
 *
 *   npx tsx bench/runner-log.ts
 *
 * Runs the real runner against the fake runner API of the tests, an s3rver
 * and a protocol server on loopback ports. The job's one task prints 200 MB
 * of ASCII lines, and the time runs from the task's `running` report to its
 * `success` report, so it includes the final upload of the log. The median
 * of 3 runs is compared with the same command writing to a file directly.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { RunnerSecret } from '../lib/runner/protocol.js';
import { makeRunnerFolders, runRunner, startFakeRunnerApi } from '../test/support/fake-runner-api.js';

const RUNS = 3;
const LOG_BYTES = 200_000_000;
const NOISY_COMMAND = `yes "the quick brown fox jumps over the lazy dog 0123456789" | head -c ${LOG_BYTES}`;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function base64Lines(count: number, bytesPerLine: number): string {
  return Array.from({ length: count }, () => randomBytes(bytesPerLine).toString('base64')).join('\n');
}

/**
 * Returns three secrets shaped like an Ed25519 SSH key, an armored PGP key
 * and a credentials file. The PGP-shaped one is a file secret, because its
 * random lines are no key that gpg could import, and masking costs the same
 * for every type.
 */
function benchmarkSecrets(): RunnerSecret[] {
  const secret = (name: string, type: RunnerSecret['type'], value: string, file?: string): RunnerSecret => ({
    id: randomUUID(),
    name,
    type,
    value: Buffer.from(value).toString('base64'),
    ...(file === undefined ? {} : { path: file, mode: 0o600 }),
  });
  return [
    secret('ssh', 'ssh_key', `-----BEGIN OPENSSH PRIVATE KEY-----\n${base64Lines(5, 52)}\n-----END OPENSSH PRIVATE KEY-----\n`),
    secret('pgp', 'plaintext_file', `-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n${base64Lines(8, 48)}\n=AbCd\n-----END PGP PRIVATE KEY BLOCK-----\n`, '~/key.asc'),
    secret('credentials', 'plaintext_file', `user = deploy\npassword = ${randomBytes(18).toString('base64')}\ntoken = ${randomBytes(24).toString('hex')}\n`, '~/credentials'),
  ];
}

/** Runs the noisy task once through the runner and returns the task's time from `running` to `success` in milliseconds. */
async function timeRunner(secrets: RunnerSecret[]): Promise<number> {
  const times = new Map<string, number>();
  const api = await startFakeRunnerApi({
    job: { tasks: [{ name: 'noisy', script: `set +x\n${NOISY_COMMAND}\n` }], logMaxBytes: 512 * 1024 * 1024 },
    secrets,
    onTaskUpdate: (_task, status) => times.set(status, performance.now()),
  });
  const folders = await makeRunnerFolders();
  try {
    const result = await runRunner(api, folders);
    if (result.code !== 0) {
      throw new Error(`the runner exited with code ${result.code}: ${result.stderr}`);
    }
    return times.get('success')! - times.get('running')!;
  } finally {
    await api.close();
    await folders.remove();
  }
}

function timeDirectWrite(folder: string): number {
  const started = performance.now();
  const result = spawnSync('bash', ['-c', `${NOISY_COMMAND} > ${path.join(folder, 'direct.log')}`]);
  if (result.status !== 0) {
    throw new Error(`the direct write failed: ${result.stderr}`);
  }
  return performance.now() - started;
}

async function main(): Promise<void> {
  const folder = await mkdtemp(path.join(os.tmpdir(), 'kiln-runner-bench-'));
  const secrets = benchmarkSecrets();
  const direct: number[] = [];
  const plain: number[] = [];
  const masked: number[] = [];
  try {
    console.log(`Runner log throughput on ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}`);
    for (let run = 0; run < RUNS; run += 1) {
      direct.push(timeDirectWrite(folder));
      plain.push(await timeRunner([]));
      masked.push(await timeRunner(secrets));
    }
  } finally {
    await rm(folder, { recursive: true, force: true });
  }

  const megabytesPerSecond = (ms: number): string => (LOG_BYTES / 1e6 / (ms / 1000)).toFixed(0);
  const rows: Array<[string, number[]]> = [
    ['written to a file directly', direct],
    ['through the runner, no secrets', plain],
    ['through the runner, 3 secrets', masked],
  ];
  for (const [label, times] of rows) {
    const ms = median(times);
    console.log(`200 MB ${label}, median of ${RUNS}: ${ms.toFixed(0)} ms (${megabytesPerSecond(ms)} MB/s); runs ${times.map((time) => time.toFixed(0)).join(', ')} ms`);
  }
  console.log(`runner without secrets / direct time ratio: ${(median(plain) / median(direct)).toFixed(2)}`);
  console.log(`runner with 3 secrets / direct time ratio: ${(median(masked) / median(direct)).toFixed(2)}`);
  console.log(`runner with 3 secrets / without secrets time ratio: ${(median(masked) / median(plain)).toFixed(2)}`);
}

await main();
