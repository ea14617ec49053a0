/**
 * Collection of a job's artifacts: the files that the manifest's `artifacts`
 * lists, uploaded after every task succeeded through presigned PUT URLs.
 */
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { resolveBuildPath } from './build-paths.js';
import { BodyLengthError, putStream, UploadRejectedError } from './log-writer.js';
import { MAX_ARTIFACT_BYTES, type ArtifactUrlResponse } from './protocol.js';
import type { BuildUser } from './tasks.js';

/** One file to upload. */
export interface Artifact {
  /** The path as the manifest lists it, which names the artifact in the protocol. */
  path: string;
  /** The absolute path of the file. */
  file: string;
  size: number;
}

/** An artifact that cannot be uploaded. */
export interface ArtifactProblem {
  path: string;
  reason: string;
}

/** PUT attempts per artifact. A new URL cannot help, because the service hands out one per artifact. */
const PUT_ATTEMPTS = 3;

/**
 * Resolves and checks every artifact path before anything is uploaded, so a
 * missing or oversized file fails the job with every problem listed and no
 * upload. A path is resolved like a task's working folder and must name a
 * regular file of at most {@link MAX_ARTIFACT_BYTES} bytes, and on the local
 * runner it must be under HOME.
 */
export async function findArtifacts(
  paths: readonly string[],
  home: string,
  allowOutsideHome: boolean,
): Promise<{ artifacts: Artifact[]; problems: ArtifactProblem[] }> {
  const artifacts: Artifact[] = [];
  const problems: ArtifactProblem[] = [];
  for (const requested of paths) {
    const resolved = resolveBuildPath(requested, home, allowOutsideHome);
    if (!resolved.ok) {
      problems.push({ path: requested, reason: resolved.reason });
      continue;
    }
    const found = await checkFile(resolved.path);
    if (typeof found === 'string') {
      problems.push({ path: requested, reason: found });
    } else {
      artifacts.push({ path: requested, file: resolved.path, size: found.size });
    }
  }
  return { artifacts, problems };
}

/** Returns the file's size, or why it cannot be an artifact. */
async function checkFile(file: string): Promise<{ size: number } | string> {
  let stats;
  try {
    stats = await stat(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      return 'the file does not exist';
    }
    return `the file cannot be read: ${(error as Error).message}`;
  }
  if (stats.isDirectory()) {
    return 'it is a folder, not a regular file';
  }
  if (!stats.isFile()) {
    return 'it is not a regular file';
  }
  if (stats.size > MAX_ARTIFACT_BYTES) {
    return `the file has ${formatSize(stats.size)}, more than the limit of ${formatSize(MAX_ARTIFACT_BYTES)}`;
  }
  return { size: stats.size };
}

/** Returns a size such as `512 bytes` or `3.4 MiB (3565158 bytes)`, for log lines. */
export function formatSize(bytes: number): string {
  if (bytes < 1024) {
    return `${bytes} bytes`;
  }
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]} (${bytes} bytes)`;
}

/**
 * Sends an artifact to its presigned URL, with exactly `artifact.size`
 * bytes, retrying network errors and 5xx responses. A file that changed
 * size since it was checked fails the upload at once.
 */
export async function putArtifact(target: ArtifactUrlResponse, artifact: Artifact, user: BuildUser, signal: AbortSignal): Promise<void> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await putStream(target.url, target.headers, artifact.size, () => openArtifact(artifact.file, user), signal);
      return;
    } catch (error) {
      const final = error instanceof BodyLengthError || (error instanceof UploadRejectedError && error.status < 500);
      if (final || signal.aborted || attempt >= PUT_ATTEMPTS) {
        throw error;
      }
      await sleep(1_000 * attempt);
    }
  }
}

/**
 * Opens an artifact for reading. When builds run as another user, the file
 * is read through `runuser … cat`, so the upload can never read a file that
 * the build user could not, such as one behind a symbolic link to a file of
 * root.
 * NOTE: tests cover only the runner's own user, so the runuser path has never run.
 */
function openArtifact(file: string, user: BuildUser): Readable {
  if (!user.ids) {
    return createReadStream(file);
  }
  const child = spawn('runuser', ['-u', user.name, '--', 'cat', '--', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => {
    stderr += text;
  });
  child.once('exit', (code) => {
    if (code !== 0) {
      child.stdout.destroy(new Error(`reading ${file} as ${user.name} failed (cat exit code ${code}): ${stderr.trim()}`));
    }
  });
  return child.stdout;
}
