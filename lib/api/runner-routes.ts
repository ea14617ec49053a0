import type { Context, Hono } from 'hono';
import type { ServiceContext } from '../context.js';
import { AuthenticationError } from '../errors.js';
import { parseId } from './guards.js';
import { readAuthorizationHeader } from '../auth/tokens.js';
import {
  authenticateRunner,
  claimJob,
  completeJob,
  createLogUploadUrl,
  updateTask,
} from '../jobs/runner-session.js';
import { fetchJobSecrets, recordArtifact, requestArtifactUpload } from '../jobs/runner-files.js';
import type {
  ArtifactUploadedRequest,
  ArtifactUrlRequest,
  CompleteRequest,
  LogUrlRequest,
  TaskUpdateRequest,
} from '../runner/protocol.js';
import type { JobRecord } from '../store/index.js';
import { readBody } from './body.js';
import type { ApiEnv } from './env.js';

function requireToken(c: Context): string {
  const token = readAuthorizationHeader(c.req.header('authorization'));
  if (token === null) throw new AuthenticationError('No token given');

  return token;
}

async function runnerJob(c: Context, context: ServiceContext, options: { forLogUpload?: boolean } = {}): Promise<JobRecord> {
  return authenticateRunner(context, parseId(c.req.param('id')), requireToken(c), options);
}

/** Routes of the runner protocol; the types in lib/runner/protocol.ts describe each body. */
export function registerRunnerRoutes(app: Hono<ApiEnv>, context: ServiceContext): void {
  app.post('/runner/v1/claim', async (c) => {
    const token = requireToken(c);
    const body = await readBody(c);

    return c.json(await claimJob(context, token, body));
  });

  app.post('/runner/v1/jobs/:id/log-url', async (c) => {
    const job = await runnerJob(c, context, { forLogUpload: true });
    const body = (await readBody(c)) as unknown as LogUrlRequest;

    return c.json(await createLogUploadUrl(context, job, body));
  });

  app.post('/runner/v1/jobs/:id/tasks/:name', async (c) => {
    const job = await runnerJob(c, context);
    await updateTask(context, job.id, c.req.param('name'), (await readBody(c)) as unknown as TaskUpdateRequest);

    return c.json({});
  });

  app.post('/runner/v1/jobs/:id/secrets', async (c) => {
    const job = await runnerJob(c, context);

    return c.json(await fetchJobSecrets(context, job));
  });

  app.post('/runner/v1/jobs/:id/artifacts', async (c) => {
    const job = await runnerJob(c, context);

    return c.json(await requestArtifactUpload(context, job, (await readBody(c)) as unknown as ArtifactUrlRequest));
  });

  app.post('/runner/v1/jobs/:id/artifacts/uploaded', async (c) => {
    const job = await runnerJob(c, context);
    await recordArtifact(context, job, (await readBody(c)) as unknown as ArtifactUploadedRequest);

    return c.json({});
  });

  app.post('/runner/v1/jobs/:id/complete', async (c) => {
    const job = await runnerJob(c, context);
    await completeJob(context, job.id, (await readBody(c)) as unknown as CompleteRequest);

    return c.json({});
  });
}
