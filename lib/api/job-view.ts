import type { ServiceContext } from '../context.js';
import { setupLogKey, taskLogKey } from '../logs/log-store.js';
import type { JobRecord } from '../store/index.js';

/** A job as build.sr.ht's REST API shows it. */
export interface JobView {
  id: number;
  status: string;
  setup_log: string | null;
  tasks: Array<{ name: string; status: string; log: string | null }>;
  note: string | null;
  tags: string | null;
  runner: string | null;
  owner: { canonical_name: string; name: string };
}

/** Renders a job, signing fresh links to its logs; the links are null until the job has a runner. */
export async function renderJob(context: ServiceContext, job: JobRecord): Promise<JobView> {
  const ttl = context.settings.logLinkTtlSeconds;
  const hasLogs = job.runner !== null;
  const link = (key: string) => (hasLogs ? context.logs.presignGet(key, ttl) : Promise.resolve(null));

  return {
    id: job.id,
    status: job.status,
    setup_log: await link(setupLogKey(job.id)),
    tasks: await Promise.all(
      job.tasks.map(async (task) => ({
        name: task.name,
        status: task.status,
        // A skipped task never ran, so it has no log object.
        log: task.status === 'skipped' ? null : await link(taskLogKey(job.id, task.name)),
      })),
    ),
    note: job.note,
    tags: job.tags.length > 0 ? job.tags.join('/') : null,
    runner: job.runner,
    owner: { canonical_name: `~${job.owner}`, name: job.owner },
  };
}
