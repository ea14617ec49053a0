/**
 * Lambda entry point of the scheduled reconciler: times out overdue jobs,
 * sends lost queue messages again and fails jobs whose runner task is gone.
 * Each step runs even when an earlier one fails, and any failure is thrown
 * at the end so that the function's error metric and alarm see it.
 */
import { awsRuntime } from '../lib/aws-context.js';
import type { ServiceContext } from '../lib/context.js';
import {
  failJobsOfLostRunners,
  reconcileJobs,
  requeueLostJobs,
  type RunnerInspector,
} from '../lib/dispatch/reconcile.js';

export interface ReconcileSummary {
  ended: number[];
  requeued: number[];
  lostRunners: number[];
}

/** Runs every reconcile step once. */
export async function reconcileAll(context: ServiceContext, inspector: RunnerInspector, now = Date.now()): Promise<ReconcileSummary> {
  const summary: ReconcileSummary = { ended: [], requeued: [], lostRunners: [] };
  const errors: unknown[] = [];

  const steps: Array<[keyof ReconcileSummary, () => Promise<number[]>]> = [
    ['ended', () => reconcileJobs(context, now)],
    ['requeued', () => requeueLostJobs(context, now)],
    ['lostRunners', () => failJobsOfLostRunners(context, inspector, now)],
  ];
  for (const [name, step] of steps) {
    try {
      summary[name] = await step();
    } catch (error) {
      context.logger.error({ err: error, step: name }, 'reconcile step failed');
      errors.push(error);
    }
  }
  context.logger.info(summary, 'reconciled jobs');

  if (errors.length > 0) throw new AggregateError(errors, `${errors.length} of ${steps.length} reconcile steps failed`);

  return summary;
}

export async function handler(): Promise<ReconcileSummary> {
  const { context, launcher } = awsRuntime();

  return reconcileAll(context, launcher);
}
