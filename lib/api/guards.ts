import { canReadJob, canWriteJob } from '../auth/access.js';
import { requireScope, type Principal, type Scope } from '../auth/tokens.js';
import type { ServiceContext } from '../context.js';
import { AuthenticationError, ForbiddenError, NotFoundError } from '../errors.js';
import type { JobRecord } from '../store/index.js';
import type { ApiContext } from './env.js';

export function requirePrincipal(c: ApiContext, scope: Scope): Principal {
  const principal = c.get('principal');
  if (principal === null) {
    throw new AuthenticationError('No token given: send "Authorization: token <your token>"');
  }
  requireScope(principal, scope);

  return principal;
}

/** Parses an id from the path; anything but a positive integer is a 404, like an unknown id. */
export function parseId(value: string | undefined, what = 'Job'): number {
  if (value === undefined || !/^[1-9]\d{0,14}$/.test(value)) {
    throw new NotFoundError(`${what} ${JSON.stringify(value ?? '')} not found`);
  }

  return Number(value);
}

/**
 * Loads a job that the caller may read. A job the caller may not read is
 * reported as not found, so that private jobs do not reveal that they exist.
 */
export async function loadReadableJob(c: ApiContext, context: ServiceContext, id: string | undefined): Promise<JobRecord> {
  const principal = c.get('principal');
  if (principal !== null || !context.settings.anonymousRead) requirePrincipal(c, 'jobs:read');

  const job = await context.stores.jobs.find(parseId(id));
  if (!job || !canReadJob(job, principal, context.settings.anonymousRead)) {
    throw new NotFoundError(`Job ${id} not found`);
  }

  return job;
}

/** Loads a job that the caller may change: 404 when the caller cannot read it, 403 when it can only read it. */
export async function loadWritableJob(c: ApiContext, context: ServiceContext, id: string | undefined): Promise<JobRecord> {
  const principal = requirePrincipal(c, 'jobs:write');
  const job = await context.stores.jobs.find(parseId(id));
  if (!job || !canReadJob(job, principal, false)) throw new NotFoundError(`Job ${id} not found`);
  if (!canWriteJob(job, principal)) {
    throw new ForbiddenError(`You may read job ${id} but not change it: ask its owner to add you to access:write`);
  }

  return job;
}
