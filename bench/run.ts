/**
 * Kiln's benchmark: `npm run bench`. Everything is measured side by side in
 * one run on a local stack in a temporary folder, on ephemeral loopback ports.
 *
 * - submit → running and submit → success of a one-task job, median of 20 jobs
 * - log throughput of a task that prints 200 MB, as a ratio to the same
 *   command writing to a file directly (median of 3 runs each)
 * - the time of one 200 MB upload to s3rver, which the runner's time includes
 * - cancel → cancelled for a running job, median of 5
 * - size and load time of each Lambda bundle that the CDK app builds (bench/bundles.ts)
 */
import { spawnSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { startLocalStack, type LocalStack } from '../infra/local/stack.js';
import type { JobView } from '../lib/api/job-view.js';
import type { JobStatus } from '../lib/jobs/state.js';
import type { JobRecord } from '../lib/store/index.js';
import { printBundleTable } from './bundles.js';

const LATENCY_JOBS = 20;
const THROUGHPUT_RUNS = 3;
const CANCEL_RUNS = 5;
const LOG_BYTES = 200_000_000;
const NOISY_COMMAND = `yes "the quick brown fox jumps over the lazy dog 0123456789" | head -c ${LOG_BYTES}`;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);

  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Records when each job reaches each status, from the store's own events. */
function watchStatuses(stack: LocalStack): Map<number, Map<JobStatus, number>> {
  const seen = new Map<number, Map<JobStatus, number>>();
  stack.context.stores.jobs.on('status', (job: JobRecord) => {
    const times = seen.get(job.id) ?? new Map<JobStatus, number>();
    times.set(job.status, performance.now());
    seen.set(job.id, times);
  });

  return seen;
}

async function submit(stack: LocalStack, manifest: string): Promise<JobView> {
  const response = await fetch(`${stack.apiUrl}/api/jobs`, {
    method: 'POST',
    headers: { authorization: `token ${stack.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ manifest }),
  });
  if (response.status !== 200) throw new Error(`submit failed: ${response.status} ${await response.text()}`);

  return (await response.json()) as JobView;
}

async function getJob(stack: LocalStack, id: number): Promise<JobView> {
  const response = await fetch(`${stack.apiUrl}/api/jobs/${id}`, { headers: { authorization: `token ${stack.token}` } });

  return (await response.json()) as JobView;
}

async function waitFor(stack: LocalStack, id: number, done: (job: JobView) => boolean, pollMs = 10): Promise<JobView> {
  for (;;) {
    const job = await getJob(stack, id);
    if (done(job)) return job;
    await sleep(pollMs);
  }
}

const ended = (job: JobView) => ['success', 'failed', 'timeout', 'cancelled'].includes(job.status);

async function measureLatency(stack: LocalStack, seen: Map<number, Map<JobStatus, number>>) {
  const toRunning: number[] = [];
  const toSuccess: number[] = [];
  for (let run = 0; run < LATENCY_JOBS; run++) {
    const started = performance.now();
    const job = await submit(stack, 'image: alpine/latest\ntasks:\n  - hello: echo hello\n');
    const final = await waitFor(stack, job.id, ended);
    if (final.status !== 'success') throw new Error(`latency job ${job.id} ended ${final.status}`);

    const times = seen.get(job.id)!;
    toRunning.push(times.get('running')! - started);
    toSuccess.push(times.get('success')! - started);
  }

  return { toRunning: median(toRunning), toSuccess: median(toSuccess) };
}

/** Times the task from `running` to its end by polling the job, so the runner's final upload is included. */
async function measureRunnerThroughput(stack: LocalStack): Promise<number> {
  const job = await submit(stack, `image: alpine/latest\ntasks:\n  - noisy: |\n      set +x\n      ${NOISY_COMMAND}\n`);
  await waitFor(stack, job.id, (view) => view.tasks[0].status !== 'pending', 5);
  const started = performance.now();
  const final = await waitFor(stack, job.id, (view) => view.tasks[0].status !== 'running', 5);
  const elapsed = performance.now() - started;
  if (final.tasks[0].status !== 'success') throw new Error(`throughput job ${job.id}: task ${final.tasks[0].status}`);

  return elapsed;
}

function measureDirectWrite(folder: string): number {
  const started = performance.now();
  const result = spawnSync('bash', ['-c', `${NOISY_COMMAND} > ${path.join(folder, 'direct.log')}`]);
  if (result.status !== 0) throw new Error(`direct write failed: ${result.stderr}`);

  return performance.now() - started;
}

/** Times one PUT of the direct write's 200 MB file to s3rver, as the runner's final log upload sends it. */
async function measureUpload(stack: LocalStack, folder: string): Promise<number> {
  const file = path.join(folder, 'direct.log');
  const { url, headers } = await stack.context.logs.presignPut('bench/upload.log');
  const started = performance.now();
  const response = await fetch(url, {
    method: 'PUT',
    headers: { ...headers, 'content-length': String((await stat(file)).size) },
    body: Readable.toWeb(createReadStream(file)) as ReadableStream,
    duplex: 'half',
  } as RequestInit);
  if (!response.ok) throw new Error(`upload failed: ${response.status}`);

  return performance.now() - started;
}

async function measureCancel(stack: LocalStack, seen: Map<number, Map<JobStatus, number>>): Promise<{ toCancelled: number; toResponse: number }> {
  const toCancelled: number[] = [];
  const toResponse: number[] = [];
  for (let run = 0; run < CANCEL_RUNS; run++) {
    const job = await submit(stack, 'image: alpine/latest\ntasks:\n  - wait: sleep 600\n');
    await waitFor(stack, job.id, (view) => view.tasks[0].status === 'running');

    const started = performance.now();
    const response = await fetch(`${stack.apiUrl}/api/jobs/${job.id}/cancel`, {
      method: 'POST',
      headers: { authorization: `token ${stack.token}` },
    });
    if (response.status !== 200) throw new Error(`cancel failed: ${response.status} ${await response.text()}`);
    toResponse.push(performance.now() - started);
    toCancelled.push(seen.get(job.id)!.get('cancelled')! - started);
  }

  return { toCancelled: median(toCancelled), toResponse: median(toResponse) };
}

async function main(): Promise<void> {
  const folder = await mkdtemp(path.join(os.tmpdir(), 'kiln-bench-'));
  const stack = await startLocalStack({
    dataDir: folder,
    apiPort: 0,
    s3Port: 0,
    dynamodbPort: 0,
    env: { KILN_LOG_MAX_BYTES: '512MiB' },
    logger: pino({ level: 'silent' }),
  });
  const seen = watchStatuses(stack);
  try {
    console.log(`Kiln benchmark on ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`);

    const latency = await measureLatency(stack, seen);
    console.log(`submit -> running, median of ${LATENCY_JOBS}: ${latency.toRunning.toFixed(0)} ms`);
    console.log(`submit -> success, median of ${LATENCY_JOBS}: ${latency.toSuccess.toFixed(0)} ms`);

    const runner: number[] = [];
    const direct: number[] = [];
    const upload: number[] = [];
    for (let run = 0; run < THROUGHPUT_RUNS; run++) {
      direct.push(measureDirectWrite(folder));
      upload.push(await measureUpload(stack, folder));
      runner.push(await measureRunnerThroughput(stack));
    }
    const runnerMs = median(runner);
    const directMs = median(direct);
    const uploadMs = median(upload);
    const mbPerSecond = (ms: number) => (LOG_BYTES / 1e6 / (ms / 1000)).toFixed(0);
    console.log(`200 MB log through the runner, median of ${THROUGHPUT_RUNS}: ${runnerMs.toFixed(0)} ms (${mbPerSecond(runnerMs)} MB/s)`);
    console.log(`200 MB written to a file directly, median of ${THROUGHPUT_RUNS}: ${directMs.toFixed(0)} ms (${mbPerSecond(directMs)} MB/s)`);
    console.log(`runner / direct time ratio: ${(runnerMs / directMs).toFixed(2)}`);
    console.log(`one 200 MB PUT to s3rver, median of ${THROUGHPUT_RUNS}: ${uploadMs.toFixed(0)} ms`);
    console.log(
      `(runner - one final upload) / direct, an estimate of the pipe's own cost: ${((runnerMs - uploadMs) / directMs).toFixed(2)}`,
    );

    const cancel = await measureCancel(stack, seen);
    console.log(`cancel -> cancelled for a running job, median of ${CANCEL_RUNS}: ${cancel.toCancelled.toFixed(0)} ms`);
    console.log(`cancel request -> response (build processes gone), median of ${CANCEL_RUNS}: ${cancel.toResponse.toFixed(0)} ms`);
  } finally {
    await stack.close();
    await rm(folder, { recursive: true, force: true });
  }

  console.log('');
  printBundleTable();
}

await main();
