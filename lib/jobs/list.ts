import type { ServiceContext } from '../context.js';
import { ValidationError } from '../errors.js';
import type { JobRecord } from '../store/index.js';
import type { JobStatus } from './state.js';

export const RESULTS_PER_PAGE = 50;

const STATUSES: readonly JobStatus[] = ['pending', 'queued', 'running', 'success', 'failed', 'timeout', 'cancelled'];

/** Query parameters of `GET /api/jobs`. */
export interface JobListQuery {
  /** Id of the first job of the page; jobs up to and including it are listed. */
  start?: number;
  /** Jobs whose tags begin with these whole tags, in order. */
  tags?: string[];
  status?: JobStatus;
}

export interface JobPage {
  jobs: JobRecord[];
  /** Id of the first job of the next page, or null on the last page. */
  next: number | null;
  /** Jobs that match the filters, on every page. */
  total: number;
}

/** Reads the list query from URL parameters; a bad value is a 400 that names the parameter. */
export function parseJobListQuery(params: { start?: string; tags?: string; status?: string }): JobListQuery {
  const query: JobListQuery = {};
  if (params.start !== undefined && params.start !== '') {
    if (!/^\d{1,15}$/.test(params.start)) {
      throw ValidationError.of('start', `start must be a job id, such as the "next" value of the previous page, not "${params.start}"`);
    }
    query.start = Number(params.start);
  }
  if (params.tags !== undefined && params.tags !== '') query.tags = params.tags.split('/');
  if (params.status !== undefined && params.status !== '') {
    if (!(STATUSES as readonly string[]).includes(params.status)) {
      throw ValidationError.of('status', `status must be one of ${STATUSES.join(', ')}, not "${params.status}"`);
    }
    query.status = params.status as JobStatus;
  }

  return query;
}

function matches(job: JobRecord, query: JobListQuery): boolean {
  if (query.status !== undefined && job.status !== query.status) return false;
  if (query.tags !== undefined) {
    const tags = query.tags;
    if (job.tags.length < tags.length || tags.some((tag, index) => job.tags[index] !== tag)) return false;
  }

  return true;
}

/**
 * Lists a user's jobs newest first, 50 a page, as build.sr.ht pages them: a
 * page starts at `start` and `next` names the first job of the page after it.
 */
export async function listJobs(context: ServiceContext, owner: string, query: JobListQuery): Promise<JobPage> {
  const jobs: JobRecord[] = [];
  let next: number | null = null;
  for await (const job of context.stores.jobs.iterateByOwner(owner, query.start)) {
    if (!matches(job, query)) continue;
    if (jobs.length === RESULTS_PER_PAGE) {
      next = job.id;
      break;
    }
    jobs.push(job);
  }

  let total = 0;
  for await (const job of context.stores.jobs.iterateByOwner(owner)) {
    if (matches(job, query)) total++;
  }

  return { jobs, next, total };
}
