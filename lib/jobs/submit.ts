import type { Principal } from '../auth/tokens.js';
import type { ServiceContext } from '../context.js';
import { ValidationError, type FieldError } from '../errors.js';
import { parseManifest, validateTriggers } from '../manifest/index.js';
import type { Manifest, Trigger } from '../manifest/types.js';
import type { JobRecord } from '../store/index.js';

export const MAX_NOTE_LENGTH = 4096;
/**
 * Largest request accepted, in bytes of the JSON of the parts that are stored
 * with the job or group. DynamoDB rejects items over 400 KiB, and a job gains
 * fields later (runner, artifacts, failure reason), so the limit leaves room.
 */
export const MAX_STORED_REQUEST_BYTES = 300 * 1024;
const TAG = /^[A-Za-z0-9_.:-]+$/;
const ACCESS_NAME = /^~?([a-z_][a-z0-9_-]{0,63}|\*)$/;

/** A job request after validation. */
export interface JobRequest {
  manifest: string;
  spec: Manifest;
  note: string | null;
  tags: string[];
  accessRead: string[];
  accessWrite: string[];
  triggers: Trigger[];
  execute: boolean;
  secrets: boolean;
}

/**
 * Validates a `POST /api/jobs` body, JSON or form-encoded, and collects every
 * problem into one ValidationError. Booleans may arrive as the strings
 * "true"/"false" and tags as one string, as form-encoded clients send them.
 */
export function validateJobRequest(body: Record<string, unknown>): JobRequest {
  const errors: FieldError[] = [];
  const collect = <T>(work: () => T, fallback: T): T => {
    try {
      return work();
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      errors.push(...error.errors);
      return fallback;
    }
  };

  const manifest = body.manifest;
  let spec: Manifest | null = null;
  if (manifest === undefined || manifest === null || manifest === '') {
    errors.push({ field: 'manifest', reason: 'manifest is required: send the build manifest as a YAML string' });
  } else if (typeof manifest !== 'string') {
    errors.push({ field: 'manifest', reason: `manifest must be the manifest's YAML text as a string, not ${Array.isArray(manifest) ? 'a list' : typeof manifest}` });
  } else if (manifest.trim() === '') {
    errors.push({ field: 'manifest', reason: 'manifest is empty: send the build manifest as a YAML string' });
  } else {
    spec = collect(() => parseManifest(manifest), null);
  }

  const request = {
    note: collect(() => readNote(body.note), null),
    tags: collect(() => readTags(body.tags), []),
    accessRead: collect(() => readAccessList('access:read', body['access:read'], ['*']), []),
    accessWrite: collect(() => readAccessList('access:write', body['access:write'], []), []),
    triggers: collect(() => (body.triggers == null ? [] : validateTriggers(body.triggers, 'triggers')), []),
    execute: collect(() => readBoolean('execute', body.execute, true), true),
    secrets: collect(() => readBoolean('secrets', body.secrets, true), true),
  };
  if (errors.length > 0 || spec === null) throw new ValidationError(errors);

  // Aliases let a 16 KiB manifest expand to megabytes, and tags, access lists and triggers have no count limit.
  const size = Buffer.byteLength(JSON.stringify({ manifest, spec, ...request }), 'utf8');
  if (size > MAX_STORED_REQUEST_BYTES) {
    throw ValidationError.of(
      undefined,
      `The job takes ${size} bytes to store, but the limit is ${MAX_STORED_REQUEST_BYTES}. ` +
        'Send fewer or shorter tags, access names or triggers, or a manifest whose aliases expand to less text.',
    );
  }

  return { manifest: manifest as string, spec, ...request };
}

function readNote(value: unknown): string | null {
  if (value == null) return null;
  if (typeof value !== 'string') throw ValidationError.of('note', 'note must be a string');
  if (value.length > MAX_NOTE_LENGTH) {
    throw ValidationError.of('note', `note is ${value.length} characters long; the limit is ${MAX_NOTE_LENGTH}`);
  }

  return value;
}

function readTags(value: unknown): string[] {
  if (value == null || value === '') return [];

  const tags = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(tags)) throw ValidationError.of('tags', 'tags must be a list of strings, or one string');

  for (const tag of tags) {
    if (typeof tag !== 'string' || !TAG.test(tag)) {
      throw ValidationError.of(
        'tags',
        `invalid tag ${JSON.stringify(tag)}: a tag may contain only letters, digits, "_", ".", ":" and "-"`,
      );
    }
  }

  return tags as string[];
}

function readAccessList(field: string, value: unknown, fallback: string[]): string[] {
  if (value == null) return fallback;

  const names = typeof value === 'string' ? value.split(/[\s,]+/).filter(Boolean) : value;
  if (!Array.isArray(names)) throw ValidationError.of(field, `${field} must be a list of user names, or "*" for everyone`);

  return names.map((name) => {
    if (typeof name !== 'string' || !ACCESS_NAME.test(name)) {
      throw ValidationError.of(field, `invalid user name ${JSON.stringify(name)} in ${field}: use "~name", "name" or "*"`);
    }

    return name.replace(/^~/, '');
  });
}

function readBoolean(field: string, value: unknown, fallback: boolean): boolean {
  if (value == null || value === '') return fallback;
  if (typeof value === 'boolean') return value;
  if (value === 'true') return true;
  if (value === 'false') return false;

  throw ValidationError.of(field, `${field} must be true or false, not ${JSON.stringify(value)}`);
}

/** Stores a new job and, unless `execute` is false, queues it. */
export async function submitJob(context: ServiceContext, principal: Principal, request: JobRequest): Promise<JobRecord> {
  const { jobs } = context.stores;
  const id = await jobs.nextJobId();
  const now = Date.now();
  const job: JobRecord = {
    id,
    owner: principal.user,
    status: request.execute ? 'queued' : 'pending',
    manifest: request.manifest,
    spec: request.spec,
    note: request.note,
    tags: request.tags,
    accessRead: request.accessRead,
    accessWrite: request.accessWrite,
    triggers: request.triggers,
    secretsEnabled: request.secrets,
    tasks: request.spec.tasks.map((task) => ({ name: task.name, status: 'pending' })),
    runner: null,
    dispatchAttempt: 0,
    dispatchedAt: null,
    jobTokenHash: null,
    sessionTokenHash: null,
    holdsSlot: false,
    createdAt: now,
    updatedAt: now,
    claimedAt: null,
    deadline: null,
    finishedAt: null,
    failureReason: null,
    groupId: null,
    version: 1,
  };
  await jobs.create(job);
  context.logger.info({ jobId: id, owner: principal.user, status: job.status }, 'job submitted');

  if (request.execute) await context.queue.send(id);

  return job;
}
