import type { ServiceContext } from '../context.js';
import { finishJob } from '../jobs/lifecycle.js';
import { isFinal } from '../jobs/state.js';

/** The fields of a stopped ECS task that identify its job and explain the stop. */
export interface StoppedTask {
  taskArn: string;
  /** `kiln-job-<id>` for the tasks that Kiln starts. */
  startedBy?: string;
  /** ECS's category of the stop, such as `EssentialContainerExited`, `TaskFailedToStart` or `SpotInterruption`. */
  stopCode?: string;
  /** ECS's message, such as `CannotPullContainerError: ...` or `Essential container in task exited`. */
  stoppedReason?: string;
  containers: Array<{ name: string; exitCode?: number; reason?: string }>;
}

/**
 * A runner task's state as ECS reports it. ECS lists a stopped task for at
 * least an hour and then reports it as missing.
 */
export type RunnerState = { state: 'active' } | { state: 'stopped'; task: StoppedTask } | { state: 'missing' };

/** The result of handling one stop event. */
export interface TaskStoppedOutcome {
  jobId: number | null;
  /** Whether this event failed the job. */
  changed: boolean;
  detail: string;
}

/** Returns the `startedBy` of a job's task; {@link jobIdOfStartedBy} reads the job id back from it. */
export function startedByOfJob(jobId: number): string {
  return `kiln-job-${jobId}`;
}

/** Reads the job id from a task's `startedBy`; returns null for tasks that Kiln did not start. */
export function jobIdOfStartedBy(startedBy: string | undefined): number | null {
  const match = /^kiln-job-(\d+)$/.exec(startedBy ?? '');

  return match ? Number(match[1]) : null;
}

/** Returns the task id, the last segment of a task ARN. */
export function taskIdOfArn(taskArn: string): string {
  return taskArn.split('/').pop() ?? '';
}

/** Exit code 137 is 128 + SIGKILL, which is how the kernel's OOM killer ends a process. */
const SIGKILL_EXIT_CODE = 137;

/**
 * Builds the setup log line that explains why a build's container stopped
 * before its runner reported the job's end.
 */
export function describeTaskStop(task: StoppedTask): string {
  const stoppedReason = task.stoppedReason?.trim() ?? '';
  const containerReasons = task.containers.map((container) => container.reason?.trim() ?? '').filter((reason) => reason !== '');
  const exitCodes = task.containers.map((container) => container.exitCode).filter((code) => code !== undefined && code !== null);
  const allText = [stoppedReason, ...containerReasons].join(' ');

  let summary: string;
  if (/OutOfMemory/i.test(allText)) {
    summary = "The build ran out of memory and its container was killed. Use less memory, or deploy Kiln with more build memory (KILN_BUILD_MEMORY)";
  } else if (/CannotPullContainerError/i.test(allText)) {
    summary = "The build's container image could not be pulled, so the build never started";
  } else if (task.stopCode === 'SpotInterruption') {
    summary = 'AWS reclaimed the Fargate Spot capacity that ran the build; submit the job again';
  } else if (task.stopCode === 'TaskFailedToStart') {
    summary = "The build's container failed to start";
  } else if (exitCodes.includes(SIGKILL_EXIT_CODE)) {
    summary = "The build's container was killed (exit code 137), often because it ran out of memory";
  } else {
    summary = "The build's container stopped before its runner reported the job's end";
  }

  const details: string[] = [];
  if (stoppedReason !== '') details.push(`ECS: ${stoppedReason}`);
  for (const reason of containerReasons) details.push(`container: ${reason}`);
  if (exitCodes.length > 0) details.push(`exit code ${exitCodes.join(', ')}`);
  if (task.stopCode) details.push(`stop code ${task.stopCode}`);

  return details.length > 0 ? `${summary} (${details.join('; ')})` : summary;
}

/**
 * Fails the job whose runner task stopped, with the reason appended to its
 * setup log. Only the task recorded as the job's runner counts, so an event
 * for an earlier attempt, a duplicate event or an event after the runner
 * reported the job's end changes nothing.
 */
export async function handleTaskStopped(context: ServiceContext, task: StoppedTask): Promise<TaskStoppedOutcome> {
  const jobId = jobIdOfStartedBy(task.startedBy);
  if (jobId === null) return { jobId, changed: false, detail: 'task was not started by Kiln' };

  const taskId = taskIdOfArn(task.taskArn);
  const job = await context.stores.jobs.find(jobId);
  if (!job) return { jobId, changed: false, detail: 'job not found' };
  if (isFinal(job.status)) return { jobId, changed: false, detail: `job already ended (${job.status})` };
  if (job.runner !== taskId) return { jobId, changed: false, detail: `task ${taskId} is not the job's runner (${job.runner ?? 'none'})` };

  const reason = describeTaskStop(task);
  const { changed, job: after } = await finishJob(context, jobId, 'failed', { reason, from: ['queued', 'running'] });
  if (changed) context.logger.warn({ jobId, taskId, reason }, 'runner task stopped before the job ended; job failed');

  return { jobId, changed, detail: changed ? reason : `job already ended (${after.status})` };
}
