import type { Principal } from '../auth/tokens.js';
import type { ServiceContext } from '../context.js';
import { NotFoundError, StateError, ValidationError, type FieldError } from '../errors.js';
import { validateTriggers } from '../manifest/index.js';
import type { GroupRecord, JobRecord } from '../store/index.js';
import { cancelJob, startJob } from './lifecycle.js';
import { isFinal } from './state.js';
import { MAX_NOTE_LENGTH, MAX_STORED_REQUEST_BYTES } from './submit.js';

/** Most jobs one group may hold. */
export const MAX_GROUP_JOBS = 100;

export interface GroupRequest {
  jobIds: number[];
  note: string | null;
  triggers: GroupRecord['triggers'];
  execute: boolean;
}

/**
 * Reads one job id: a positive whole JSON number, or the digits of one as
 * form-encoded bodies send them. Returns null for anything else, such as
 * `true`, `[5]` or `"0x5"`, which Number() would turn into an id.
 */
function readJobId(value: unknown): number | null {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? value : null;
  if (typeof value === 'string' && /^[1-9]\d{0,14}$/.test(value)) return Number(value);

  return null;
}

/** Validates a `POST /api/job-group` body; `execute` defaults to false, as on build.sr.ht. */
export function validateGroupRequest(body: Record<string, unknown>): GroupRequest {
  const errors: FieldError[] = [];
  const rawJobs = typeof body.jobs === 'string' || typeof body.jobs === 'number' ? [body.jobs] : body.jobs;
  let jobIds: number[] = [];
  if (!Array.isArray(rawJobs) || rawJobs.length === 0) {
    errors.push({ field: 'jobs', reason: 'jobs is required: a list of the ids of your pending jobs' });
  } else if (rawJobs.length > MAX_GROUP_JOBS) {
    errors.push({ field: 'jobs', reason: `a group holds at most ${MAX_GROUP_JOBS} jobs, not ${rawJobs.length}` });
  } else {
    const ids = rawJobs.map(readJobId);
    const badIndex = ids.findIndex((id) => id === null);
    if (badIndex !== -1) errors.push({ field: 'jobs', reason: `${JSON.stringify(rawJobs[badIndex])} is not a job id` });
    jobIds = ids.filter((id): id is number => id !== null);
    if (new Set(jobIds).size !== jobIds.length) errors.push({ field: 'jobs', reason: 'a job id is listed twice' });
  }

  let note: string | null = null;
  if (body.note != null) {
    if (typeof body.note !== 'string') errors.push({ field: 'note', reason: 'note must be a string' });
    else if (body.note.length > MAX_NOTE_LENGTH) errors.push({ field: 'note', reason: `note is longer than ${MAX_NOTE_LENGTH} characters` });
    else note = body.note;
  }

  let triggers: GroupRecord['triggers'] = [];
  try {
    triggers = validateTriggers(body.triggers, 'triggers');
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    errors.push(...error.errors);
  }

  let execute = false;
  if (body.execute === true || body.execute === 'true') execute = true;
  else if (body.execute != null && body.execute !== false && body.execute !== 'false' && body.execute !== '') {
    errors.push({ field: 'execute', reason: `execute must be true or false, not ${JSON.stringify(body.execute)}` });
  }
  if (errors.length > 0) throw new ValidationError(errors);

  const size = Buffer.byteLength(JSON.stringify({ jobIds, note, triggers }), 'utf8');
  if (size > MAX_STORED_REQUEST_BYTES) {
    throw ValidationError.of(
      'triggers',
      `The job group takes ${size} bytes to store, but the limit is ${MAX_STORED_REQUEST_BYTES}. Send fewer triggers.`,
    );
  }

  return { jobIds, note, triggers, execute };
}

/**
 * Creates a group from the caller's pending jobs. Each job joins with a
 * conditional write, so a job never ends up in two groups. When one job
 * cannot join, or the group cannot be stored, the jobs that already joined
 * are released and nothing is created.
 */
export async function createGroup(context: ServiceContext, principal: Principal, request: GroupRequest): Promise<GroupRecord> {
  const { jobs, groups } = context.stores;
  const groupId = await groups.nextGroupId();
  const group: GroupRecord = {
    id: groupId,
    owner: principal.user,
    note: request.note,
    triggers: request.triggers,
    jobIds: request.jobIds,
    createdAt: Date.now(),
    triggersRunAt: null,
  };
  const joined: number[] = [];
  try {
    for (const jobId of request.jobIds) {
      await jobs.transition(jobId, (job) => {
        if (job.owner !== principal.user) throw ValidationError.of('jobs', `job ${jobId} not found among your jobs`);
        if (job.groupId !== null) throw ValidationError.of('jobs', `job ${jobId} is already in job group ${job.groupId}`);
        if (job.status !== 'pending') {
          throw ValidationError.of('jobs', `job ${jobId} is ${job.status}; only pending jobs (submitted with execute: false) can join a group`);
        }

        return { ...job, groupId };
      });
      joined.push(jobId);
    }
    await groups.create(group);
  } catch (error) {
    for (const jobId of joined) {
      await jobs.transition(jobId, (job) => (job.groupId === groupId ? { ...job, groupId: null } : null));
    }
    if (error instanceof NotFoundError) throw ValidationError.of('jobs', `${error.message} among your jobs`);
    throw error;
  }

  context.logger.info({ groupId, jobIds: group.jobIds }, 'job group created');
  if (request.execute) await startGroup(context, group);

  return group;
}

export async function loadGroupJobs(context: ServiceContext, group: GroupRecord): Promise<JobRecord[]> {
  return Promise.all(group.jobIds.map((id) => context.stores.jobs.get(id)));
}

/** Starts every pending job of the group. */
export async function startGroup(context: ServiceContext, group: GroupRecord): Promise<void> {
  const pending = (await loadGroupJobs(context, group)).filter((job) => job.status === 'pending');
  if (pending.length === 0) throw new StateError('This job group has already been started');

  for (const job of pending) await startJob(context, job.id);
}

/** Cancels every job of the group that has not ended. */
export async function cancelGroup(context: ServiceContext, group: GroupRecord): Promise<void> {
  const active = (await loadGroupJobs(context, group)).filter((job) => !isFinal(job.status));
  if (active.length === 0) throw new StateError('Every job of this job group has already finished');

  await Promise.all(
    active.map((job) =>
      cancelJob(context, job.id).catch((error: unknown) => {
        if (!(error instanceof StateError)) throw error;
      }),
    ),
  );
}
