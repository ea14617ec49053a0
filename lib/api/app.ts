import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { canReadJob, canWriteJob } from '../auth/access.js';
import {
  authenticateToken,
  readAuthorizationHeader,
  requireScope,
  type Principal,
  type Scope,
} from '../auth/tokens.js';
import type { ServiceContext } from '../context.js';
import { AuthenticationError, ForbiddenError, NotFoundError } from '../errors.js';
import { startJob } from '../jobs/lifecycle.js';
import { submitJob, validateJobRequest } from '../jobs/submit.js';
import { setupLogKey, taskLogKey } from '../logs/log-store.js';
import type { JobRecord } from '../store/index.js';
import { MAX_BODY_BYTES, readBody } from './body.js';
import { errorResponse, handleError } from './errors.js';
import { renderJob } from './job-view.js';
import { registerRunnerRoutes } from './runner-routes.js';

type Env = { Variables: { principal: Principal | null } };

/** Builds the HTTP app that serves build.sr.ht's REST API and the runner protocol, on Lambda and locally. */
export function createApp(context: ServiceContext): Hono<Env> {
  const app = new Hono<Env>();

  app.onError((error, c) => handleError(error, c, context.logger));
  app.notFound((c) => errorResponse(c, 404, `No route for ${c.req.method} ${c.req.path}`));
  app.use(
    '*',
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: (c) => {
        // The rest of the body is never read, so the connection cannot carry another request.
        c.header('connection', 'close');
        return errorResponse(c, 413, `The request body is larger than the limit of ${MAX_BODY_BYTES} bytes`);
      },
    }),
  );
  app.use('/api/*', async (c, next) => {
    const token = readAuthorizationHeader(c.req.header('authorization'));
    c.set('principal', token === null ? null : await authenticateToken(context.stores.tokens, token));
    await next();
  });

  registerJobRoutes(app, context);
  registerRunnerRoutes(app, context);

  return app;
}

function requirePrincipal(c: Context<Env>, scope: Scope): Principal {
  const principal = c.get('principal');
  if (principal === null) {
    throw new AuthenticationError('No token given: send "Authorization: token <your token>"');
  }
  requireScope(principal, scope);

  return principal;
}

/** Parses a job id from the path; anything but a positive integer is a 404 like an unknown id. */
function parseJobId(value: string): number {
  if (!/^[1-9]\d{0,14}$/.test(value)) throw new NotFoundError(`Job ${JSON.stringify(value)} not found`);

  return Number(value);
}

/**
 * Loads a job that the caller may read. Jobs the caller may not read are
 * reported as not found, so private jobs do not reveal that they exist.
 */
async function loadReadableJob(c: Context<Env>, context: ServiceContext, id: string): Promise<JobRecord> {
  const principal = c.get('principal');
  if (principal !== null || !context.settings.anonymousRead) requirePrincipal(c, 'jobs:read');

  const job = await context.stores.jobs.find(parseJobId(id));
  if (!job || !canReadJob(job, principal, context.settings.anonymousRead)) {
    throw new NotFoundError(`Job ${id} not found`);
  }

  return job;
}

async function loadWritableJob(c: Context<Env>, context: ServiceContext, id: string): Promise<JobRecord> {
  const principal = requirePrincipal(c, 'jobs:write');
  const job = await context.stores.jobs.find(parseJobId(id));
  if (!job || !canReadJob(job, principal, false)) throw new NotFoundError(`Job ${id} not found`);
  if (!canWriteJob(job, principal)) {
    throw new ForbiddenError(`You may read job ${id} but not change it: ask its owner to add you to access:write`);
  }

  return job;
}

function registerJobRoutes(app: Hono<Env>, context: ServiceContext): void {
  app.post('/api/jobs', async (c) => {
    const principal = requirePrincipal(c, 'jobs:write');
    const request = validateJobRequest(await readBody(c));
    const job = await submitJob(context, principal, request);

    return c.json(await renderJob(context, job), 200);
  });

  app.get('/api/jobs/:id', async (c) => {
    const job = await loadReadableJob(c, context, c.req.param('id'));

    return c.json(await renderJob(context, job));
  });

  app.get('/api/jobs/:id/manifest', async (c) => {
    const job = await loadReadableJob(c, context, c.req.param('id'));

    return c.text(job.manifest, 200, { 'content-type': 'text/plain; charset=utf-8' });
  });

  app.get('/api/jobs/:id/log', async (c) => {
    const job = await loadReadableJob(c, context, c.req.param('id'));
    if (job.runner === null) throw new NotFoundError(`Job ${job.id} has no setup log yet: it has not been dispatched`);

    return c.redirect(await context.logs.presignGet(setupLogKey(job.id), context.settings.logLinkTtlSeconds), 302);
  });

  app.get('/api/jobs/:id/tasks/:name/log', async (c) => {
    const job = await loadReadableJob(c, context, c.req.param('id'));
    const name = c.req.param('name');
    if (!job.tasks.some((task) => task.name === name)) {
      throw new NotFoundError(`Job ${job.id} has no task named ${JSON.stringify(name)}`);
    }
    if (job.runner === null) throw new NotFoundError(`Job ${job.id} has no task logs yet: it has not been dispatched`);

    return c.redirect(await context.logs.presignGet(taskLogKey(job.id, name), context.settings.logLinkTtlSeconds), 302);
  });

  app.post('/api/jobs/:id/start', async (c) => {
    const job = await loadWritableJob(c, context, c.req.param('id'));
    await startJob(context, job.id);

    return c.json({});
  });
}
