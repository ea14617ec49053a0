// The container's entry point: names the runner after its ECS task, then
// starts the runner bundle next to this file.
//
// The claim must name the task that the dispatcher recorded as the job's
// runner, and a task learns its own id only from the ECS task metadata
// endpoint, whose URL ECS passes in ECS_CONTAINER_METADATA_URI_V4. Outside
// ECS that variable is unset and the runner starts without a name.

const METADATA_TIMEOUT_MS = 5_000;

async function ecsTaskId(metadataUri) {
  const response = await fetch(`${metadataUri}/task`, { signal: AbortSignal.timeout(METADATA_TIMEOUT_MS) });
  if (!response.ok) throw new Error(`the ECS task metadata endpoint returned ${response.status}`);

  const { TaskARN: taskArn } = await response.json();
  const taskId = typeof taskArn === 'string' ? taskArn.split('/').pop() : '';
  if (!taskId) throw new Error('the ECS task metadata has no TaskARN');

  return taskId;
}

const metadataUri = process.env.ECS_CONTAINER_METADATA_URI_V4;
if (metadataUri && !process.env.KILN_RUNNER_NAME) {
  try {
    process.env.KILN_RUNNER_NAME = await ecsTaskId(metadataUri);
  } catch (error) {
    // Without its name the runner's claim is rejected, and the job fails with the runner's exit code.
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`${JSON.stringify({ level: 'error', msg: 'failed to read the ECS task id', err: message })}\n`);
  }
}

await import('./runner.mjs');
