/** Job states, as build.sr.ht names them. */
export type JobStatus = 'pending' | 'queued' | 'running' | 'success' | 'failed' | 'timeout' | 'cancelled';

/** Task states, as build.sr.ht names them. */
export type TaskStatus = 'pending' | 'running' | 'success' | 'failed' | 'skipped';

export const FINAL_JOB_STATUSES: readonly JobStatus[] = ['success', 'failed', 'timeout', 'cancelled'];

export function isFinal(status: JobStatus): boolean {
  return FINAL_JOB_STATUSES.includes(status);
}

/** Job moves that may happen; anything else is rejected, so states only move forward. */
const JOB_MOVES: Record<JobStatus, readonly JobStatus[]> = {
  pending: ['queued', 'cancelled'],
  queued: ['running', 'failed', 'cancelled', 'timeout'],
  running: ['success', 'failed', 'timeout', 'cancelled'],
  success: [],
  failed: [],
  timeout: [],
  cancelled: [],
};

const TASK_MOVES: Record<TaskStatus, readonly TaskStatus[]> = {
  pending: ['running', 'skipped'],
  running: ['success', 'failed'],
  success: [],
  failed: [],
  skipped: [],
};

export function canMoveJob(from: JobStatus, to: JobStatus): boolean {
  return JOB_MOVES[from].includes(to);
}

export function canMoveTask(from: TaskStatus, to: TaskStatus): boolean {
  return TASK_MOVES[from].includes(to);
}

/**
 * Describes a job's state for an error such as "This job is already complete".
 * build.sr.ht's own message for a cancelled job reads "already None"; Kiln names the state.
 */
export function describeState(status: JobStatus): string {
  switch (status) {
    case 'success':
    case 'failed':
    case 'timeout':
      return `complete (${status})`;
    default:
      return status;
  }
}
