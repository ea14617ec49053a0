/**
 * Lambda entry point for EventBridge's "ECS Task State Change" events with
 * lastStatus STOPPED on the build cluster: fails the job whose runner task
 * stopped before the runner reported the job's end.
 */
import type { EventBridgeEvent } from 'aws-lambda';
import { awsRuntime } from '../lib/aws-context.js';
import type { ServiceContext } from '../lib/context.js';
import { handleTaskStopped, type TaskStoppedOutcome } from '../lib/dispatch/task-stopped.js';

/** The fields of the event's `detail` that the handler reads; ECS sends the whole task description. */
export interface EcsTaskStateChange {
  taskArn: string;
  clusterArn?: string;
  lastStatus: string;
  startedBy?: string;
  stopCode?: string;
  stoppedReason?: string;
  containers?: Array<{ name?: string; exitCode?: number; reason?: string }>;
}

export type TaskStateChangeEvent = EventBridgeEvent<'ECS Task State Change', EcsTaskStateChange>;

/** Handles one event; returns null for a task that has not stopped. */
export async function handleTaskStateChange(
  context: ServiceContext,
  event: TaskStateChangeEvent,
): Promise<TaskStoppedOutcome | null> {
  const detail = event.detail;
  if (detail.lastStatus !== 'STOPPED') return null;

  const outcome = await handleTaskStopped(context, {
    taskArn: detail.taskArn,
    startedBy: detail.startedBy,
    stopCode: detail.stopCode,
    stoppedReason: detail.stoppedReason,
    containers: (detail.containers ?? []).map((container) => ({
      name: container.name ?? '',
      exitCode: container.exitCode,
      reason: container.reason,
    })),
  });
  context.logger.info({ ...outcome, taskArn: detail.taskArn, eventId: event.id }, 'handled task stopped event');

  return outcome;
}

export async function handler(event: TaskStateChangeEvent): Promise<TaskStoppedOutcome | null> {
  return handleTaskStateChange(awsRuntime().context, event);
}
