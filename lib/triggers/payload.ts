import type { JobView } from '../api/job-view.js';
import type { ServiceContext } from '../context.js';
import type { GroupRecord, JobRecord } from '../store/index.js';

/**
 * A job group as the API shows it, with its jobs rendered for triggers and
 * without `triggers`, so that no receiver learns the other receivers' URLs
 * and addresses.
 */
export interface GroupView {
  id: number;
  created: string;
  note: string | null;
  owner: { canonical_name: string; name: string };
  jobs: JobView[];
}

/** Builds the link to a job's setup log that redirects to a freshly signed URL, so it does not expire. */
export function setupLogLink(context: ServiceContext, jobId: number): string {
  return `${context.publicUrl}/api/jobs/${jobId}/log`;
}

/** Builds the link to a task's log that redirects to a freshly signed URL, so it does not expire. */
export function taskLogLink(context: ServiceContext, jobId: number, task: string): string {
  return `${context.publicUrl}/api/jobs/${jobId}/tasks/${encodeURIComponent(task)}/log`;
}

/**
 * Renders a job in the API's shape for webhooks and emails. Unlike the API's
 * presigned links, which expire, the log links point at the redirect routes.
 * They are null until the job has a runner, as in the API.
 */
export function renderTriggerJob(context: ServiceContext, job: JobRecord): JobView {
  const hasLogs = job.runner !== null;

  return {
    id: job.id,
    status: job.status,
    setup_log: hasLogs ? setupLogLink(context, job.id) : null,
    tasks: job.tasks.map((task) => ({
      name: task.name,
      status: task.status,
      log: hasLogs ? taskLogLink(context, job.id, task.name) : null,
    })),
    note: job.note,
    tags: job.tags.length > 0 ? job.tags.join('/') : null,
    runner: job.runner,
    owner: { canonical_name: `~${job.owner}`, name: job.owner },
  };
}

/** Renders a job group for webhooks, with its jobs as {@link renderTriggerJob} renders them. */
export function renderTriggerGroup(context: ServiceContext, group: GroupRecord, jobs: readonly JobRecord[]): GroupView {
  return {
    id: group.id,
    created: new Date(group.createdAt).toISOString(),
    note: group.note,
    owner: { canonical_name: `~${group.owner}`, name: group.owner },
    jobs: jobs.map((job) => renderTriggerJob(context, job)),
  };
}
