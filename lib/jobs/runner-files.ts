import path from 'node:path';
import type { ServiceContext } from '../context.js';
import { StateError, ValidationError } from '../errors.js';
import {
  MAX_ARTIFACT_BYTES,
  type ArtifactUploadedRequest,
  type ArtifactUrlRequest,
  type ArtifactUrlResponse,
  type SecretsResponse,
} from '../runner/protocol.js';
import { resolveJobSecrets } from '../secrets/secrets.js';
import type { ArtifactRecord, JobRecord } from '../store/index.js';
import { JobEndedError } from './runner-session.js';

export function artifactKey(jobId: number, name: string): string {
  return `artifacts/${jobId}/${name}`;
}

/**
 * Hands the runner the job's secrets, but only before its first task starts,
 * so build code that gets hold of the runner's session token cannot fetch
 * them. A retry after a lost response, before any task, still gets them.
 */
export async function fetchJobSecrets(context: ServiceContext, job: JobRecord): Promise<SecretsResponse> {
  await context.stores.jobs.transition(job.id, (current) => {
    if (current.status !== 'running') throw new JobEndedError(`Job ${job.id} is ${current.status}`);
    if (current.tasks.some((task) => task.status !== 'pending')) {
      throw new StateError(`The secrets of job ${job.id} are handed out only before its first task starts`);
    }

    return { ...current, secretsFetchedAt: current.secretsFetchedAt ?? Date.now() };
  });

  const secrets = await resolveJobSecrets(context, job);
  context.logger.info({ jobId: job.id, count: secrets.length }, 'secrets handed to runner');

  return { secrets };
}

function findManifestArtifact(job: JobRecord, artifactPath: unknown): string {
  if (typeof artifactPath !== 'string' || !job.spec.artifacts.includes(artifactPath)) {
    throw ValidationError.of('path', `${JSON.stringify(artifactPath)} is not one of the manifest's artifacts`);
  }

  return path.posix.basename(artifactPath);
}

/** Signs the upload of one artifact; a name already uploaded is never signed again, so no artifact is overwritten. */
export async function requestArtifactUpload(
  context: ServiceContext,
  job: JobRecord,
  request: ArtifactUrlRequest,
): Promise<ArtifactUrlResponse> {
  const name = findManifestArtifact(job, request.path);
  if (!Number.isSafeInteger(request.size) || request.size < 0) {
    throw ValidationError.of('size', 'size must be the file size in bytes');
  }
  if (request.size > MAX_ARTIFACT_BYTES) {
    throw ValidationError.of('size', `${request.path} is ${request.size} bytes; an artifact may be at most ${MAX_ARTIFACT_BYTES} bytes (1 GiB)`);
  }
  if ((job.artifacts ?? []).some((artifact) => artifact.name === name)) {
    throw ValidationError.of('path', `artifact ${name} was uploaded already; artifacts are never overwritten`);
  }

  return context.logs.presignArtifactPut(artifactKey(job.id, name), request.size);
}

/** Lists an uploaded artifact on the job, after checking that its object exists. */
export async function recordArtifact(context: ServiceContext, job: JobRecord, request: ArtifactUploadedRequest): Promise<void> {
  const name = findManifestArtifact(job, request.path);
  const key = artifactKey(job.id, name);
  const size = await context.logs.objectSize(key);
  if (size === null) throw ValidationError.of('path', `artifact ${name} has not been uploaded`);

  await context.stores.jobs.transition(job.id, (current) => {
    const artifacts = current.artifacts ?? [];
    if (artifacts.some((artifact) => artifact.name === name)) return null;

    const artifact: ArtifactRecord = { id: artifacts.length + 1, path: request.path, name, key, size, createdAt: Date.now() };
    return { ...current, artifacts: [...artifacts, artifact] };
  });
}
