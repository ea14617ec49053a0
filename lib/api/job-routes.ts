import type { Hono } from 'hono';
import type { ServiceContext } from '../context.js';
import { NotFoundError, ValidationError } from '../errors.js';
import { cancelJob, startJob } from '../jobs/lifecycle.js';
import { listJobs, parseJobListQuery, RESULTS_PER_PAGE } from '../jobs/list.js';
import { submitJob, validateJobRequest } from '../jobs/submit.js';
import { setupLogKey, taskLogKey } from '../logs/log-store.js';
import { readBody } from './body.js';
import type { ApiEnv } from './env.js';
import { loadReadableJob, loadWritableJob, requirePrincipal } from './guards.js';
import { renderJob } from './job-view.js';

/** build.sr.ht's job routes. */
export function registerJobRoutes(app: Hono<ApiEnv>, context: ServiceContext): void {
  app.get('/api/jobs', async (c) => {
    const principal = requirePrincipal(c, 'jobs:read');
    const query = parseJobListQuery({ start: c.req.query('start'), tags: c.req.query('tags'), status: c.req.query('status') });
    const page = await listJobs(context, principal.user, query);

    return c.json({
      next: page.next === null ? null : String(page.next),
      results: await Promise.all(page.jobs.map((job) => renderJob(context, job))),
      total: page.total,
      results_per_page: RESULTS_PER_PAGE,
    });
  });

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

  app.get('/api/jobs/:id/artifacts', async (c) => {
    const job = await loadReadableJob(c, context, c.req.param('id'));
    const start = c.req.query('start');
    if (start !== undefined && start !== '' && !/^\d{1,15}$/.test(start)) {
      throw ValidationError.of('start', `start must be an artifact id, such as the "next" value of the previous page, not "${start}"`);
    }
    // Paged like the job list: newest first, a page starts at `start` and includes it, and total counts every artifact.
    const all = [...(job.artifacts ?? [])].sort((a, b) => b.id - a.id);
    const artifacts = start ? all.filter((artifact) => artifact.id <= Number(start)) : all;
    const page = artifacts.slice(0, RESULTS_PER_PAGE);
    const next = artifacts[RESULTS_PER_PAGE]?.id ?? null;

    return c.json({
      next: next === null ? null : String(next),
      results: await Promise.all(
        page.map(async (artifact) => ({
          id: artifact.id,
          created: new Date(artifact.createdAt).toISOString(),
          path: artifact.path,
          name: artifact.name,
          url: await context.logs.presignGet(artifact.key, context.settings.logLinkTtlSeconds),
          size: artifact.size,
        })),
      ),
      total: all.length,
      results_per_page: RESULTS_PER_PAGE,
    });
  });

  app.post('/api/jobs/:id/start', async (c) => {
    const job = await loadWritableJob(c, context, c.req.param('id'));
    await startJob(context, job.id);

    return c.json({});
  });

  app.post('/api/jobs/:id/cancel', async (c) => {
    const job = await loadWritableJob(c, context, c.req.param('id'));
    await cancelJob(context, job.id);

    return c.json({});
  });
}
