import { SettingError } from '../../lib/config.js';
import { logger } from '../../lib/logger.js';
import { DataDirInUseError, startLocalStack } from './stack.js';

/** Reads a TCP port; 0 lets the system pick a free one, which the ready line then shows. */
function parsePort(name: string, value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value.trim()) || port > 65535) {
    throw new SettingError(`${name}="${value}" is not a TCP port: use a number from 0 to 65535`);
  }

  return port;
}

/** Starts the local stack for `npm start` and stops it cleanly on Ctrl-C. */
async function main(): Promise<void> {
  const env = process.env;
  const port = (name: string, fallback: number) => (env[name] ? parsePort(name, env[name]) : fallback);

  const stack = await startLocalStack({
    dataDir: env.KILN_DATA_DIR || '.kiln',
    apiPort: port('KILN_API_PORT', 8080),
    s3Port: port('KILN_S3_PORT', 8081),
    dynamodbPort: port('KILN_DYNAMODB_PORT', 8082),
    onStatus: (job, previous) => {
      const move = previous === null ? job.status : `${previous} -> ${job.status}`;
      console.log(`job ${job.id} (~${job.owner}) ${move}`);
    },
  });

  if (stack.tokenCreated) {
    console.log(`Created a token for the user "local" (scopes jobs:read, jobs:write, secrets:read, secrets:write):`);
    console.log(`  ${stack.token}`);
    console.log(`It is saved in ${env.KILN_DATA_DIR || '.kiln'}/token, where the kiln CLI finds it.`);
  }
  for (const id of stack.recovered.failed) console.log(`job ${id} failed: the local stack stopped while it ran`);
  for (const id of stack.recovered.requeued) console.log(`job ${id} queued again after the restart`);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      console.log('Stopping now, without waiting for builds');
      process.exit(130);
    }
    stopping = true;
    console.log(`Received ${signal}: stopping builds and servers (Ctrl-C again to stop at once)`);
    stack.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'failed to stop cleanly');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // The ready line comes after the handlers, because a script may send SIGINT as soon as it reads it.
  console.log(`Kiln is ready at ${stack.apiUrl} (S3 at ${stack.s3Endpoint}, DynamoDB at ${stack.dynamodbEndpoint})`);
}

main().catch((error: unknown) => {
  if (error instanceof SettingError || error instanceof DataDirInUseError) {
    console.error(`kiln: ${error.message}`);
  } else if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
    console.error(`kiln: ${(error as Error).message}: another program uses that port; set KILN_API_PORT, KILN_S3_PORT or KILN_DYNAMODB_PORT`);
  } else {
    console.error('kiln: failed to start:', error);
  }
  process.exit(1);
});
