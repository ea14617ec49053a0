import type { JobRecord } from '../store/index.js';
import type { Principal } from './tokens.js';

/**
 * Checks whether a caller may read a job, its manifest, logs and artifacts.
 * Readers are the owner, anyone named in either access list, and, with `*`
 * in `access:read`, every user with a token. A caller without a token (null) may read only
 * public jobs, and only when anonymous reads are allowed.
 */
export function canReadJob(job: JobRecord, principal: Principal | null, anonymousRead: boolean): boolean {
  const isPublic = job.accessRead.includes('*');
  if (principal === null) return isPublic && anonymousRead;

  return (
    isPublic ||
    job.owner === principal.user ||
    job.accessRead.includes(principal.user) ||
    job.accessWrite.includes(principal.user)
  );
}

/** Checks whether a caller may start or cancel a job: the owner and anyone named in `access:write` may. */
export function canWriteJob(job: JobRecord, principal: Principal | null): boolean {
  if (principal === null) return false;

  return job.owner === principal.user || job.accessWrite.includes(principal.user) || job.accessWrite.includes('*');
}
