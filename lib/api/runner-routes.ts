import type { Context, Hono } from 'hono';
import type { ServiceContext } from '../context.js';
import { AuthenticationError, NotFoundError } from '../errors.js';
import { readAuthorizationHeader } from '../auth/tokens.js';
import {
  authenticateRunner,
  claimJob,
  completeJob,
  createLogUploadUrl,
  updateTask,
} from '../jobs/runner-session.js';
import type { CompleteRequest, LogUrlRequest, TaskUpdateRequest } from '../runner/protocol.js';
import type { JobRecord } from '../store/index.js';
import { readBody } from './body.js';

function requireToken(c: Context): string {
  const token = readAuthorizationHeader(c.req.header('authorization'));
  if (token === null) throw new AuthenticationError('No token given');

  return token;
}

function parseId(value: string): number {
  if (!/^[1-9]\d{0,14}$/.test(value)) throw new NotFoundError(`Job ${JSON.stringify(value)} not found`);

  return Number(value);
}

async function runnerJob(c: Context, context: ServiceContext): Promise<JobRecord> {
  return authenticateRunner(context, parseId(c.req.param('id') ?? ''), requireToken(c));
}

/** Routes of the runner protocol; the types in lib/runner/protocol.ts describe each body. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function registerRunnerRoutes(app: Hono<any>, context: ServiceContext): void {
  app.post('/runner/v1/claim', async (c) => {
    const token = requireToken(c);
    const body = await readBody(c);

    return c.json(await claimJob(context, token, body));
  });

  app.post('/runner/v1/jobs/:id/log-url', async (c) => {
    const job = await runnerJob(c, context);
    const body = (await readBody(c)) as unknown as LogUrlRequest;

    return c.json(await createLogUploadUrl(context, job, body));
  });

  app.post('/runner/v1/jobs/:id/tasks/:name', async (c) => {
    const job = await runnerJob(c, context);
    await updateTask(context, job.id, c.req.param('name'), (await readBody(c)) as unknown as TaskUpdateRequest);

    return c.json({});
  });

  app.post('/runner/v1/jobs/:id/complete', async (c) => {
    const job = await runnerJob(c, context);
    await completeJob(context, job.id, (await readBody(c)) as unknown as CompleteRequest);

    return c.json({});
  });
}
