import { setTimeout as sleep } from 'node:timers/promises';
import type { JobView } from '../api/job-view.js';
import { isFinal, type JobStatus } from '../jobs/state.js';
import type { ApiClient } from './api-client.js';

const POLL_INTERVAL_MS = 1000;

/**
 * Prints a job's setup log and then each task's log as they grow, until the
 * job ends. Returns the final job.
 */
export async function followJob(client: ApiClient, id: number, write: (text: string) => void): Promise<JobView> {
  const printed = new Map<string, number>();
  let lastPrinted: string | null = null;
  const printNew = async (name: string, link: string | null) => {
    if (link === null) return;

    const response = await fetch(link);
    if (!response.ok) return;
    const bytes = Buffer.from(await response.arrayBuffer());
    const offset = printed.get(name) ?? 0;
    if (bytes.length > offset && lastPrinted !== name) {
      // A header whenever the output switches logs, so text of two logs never runs together.
      write(`${offset === 0 ? '' : '\n'}\n==> ${name}${offset === 0 ? '' : ' (continued)'}\n`);
      lastPrinted = name;
    }
    if (bytes.length > offset) {
      write(bytes.subarray(offset).toString('utf8'));
      printed.set(name, bytes.length);
    }
  };

  for (;;) {
    const job = await client.getJob(id);
    await printNew('setup log', job.setup_log);
    for (const task of job.tasks) await printNew(`task ${task.name}`, task.log);

    if (isFinal(job.status as JobStatus)) {
      write(`\n==> job ${job.id} ${job.status}\n`);
      return job;
    }
    await sleep(POLL_INTERVAL_MS);
  }
}
