import { KilnError } from '../errors.js';

/** The inputs a launcher needs to start one runner. */
export interface LaunchRequest {
  jobId: number;
  /** One-time token that the runner exchanges for a session token at its claim. */
  jobToken: string;
  /** Counts launches of this job, from 1; launchers use it to make a retried launch idempotent. */
  attempt: number;
  image: string;
  arch: 'x86_64' | 'arm64';
}

/** Starts and stops runners: a child process locally, an ECS task on AWS. */
export interface Launcher {
  /** Starts a runner and returns its name (`local`, or the ECS task id). */
  launch(request: LaunchRequest): Promise<string>;
  /** Stops a job's runner and every process it started; a runner that is already gone is no error. */
  stop(jobId: number, runner: string, reason: string): Promise<void>;
}

/**
 * A launch that failed for lack of capacity, a quota or throttling: the job
 * stays queued and is tried again later. Any other error fails the job.
 */
export class CapacityError extends KilnError {
  override name = 'CapacityError';
}
