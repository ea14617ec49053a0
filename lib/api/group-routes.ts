import type { Hono } from 'hono';
import type { ServiceContext } from '../context.js';
import { NotFoundError } from '../errors.js';
import { cancelGroup, createGroup, loadGroupJobs, startGroup, validateGroupRequest } from '../jobs/groups.js';
import type { GroupRecord } from '../store/index.js';
import { readBody } from './body.js';
import type { ApiContext, ApiEnv } from './env.js';
import { parseId, requirePrincipal } from './guards.js';
import { renderJob } from './job-view.js';

async function renderGroup(context: ServiceContext, group: GroupRecord) {
  const jobs = await loadGroupJobs(context, group);

  return {
    id: group.id,
    created: new Date(group.createdAt).toISOString(),
    note: group.note,
    owner: { canonical_name: `~${group.owner}`, name: group.owner },
    jobs: await Promise.all(jobs.map((job) => renderJob(context, job))),
    triggers: group.triggers,
  };
}

/** Loads a group of the caller's; other users' groups are reported as not found. */
async function loadOwnGroup(c: ApiContext, context: ServiceContext, scope: 'jobs:read' | 'jobs:write'): Promise<GroupRecord> {
  const principal = requirePrincipal(c, scope);
  const id = c.req.param('id');
  const group = await context.stores.groups.find(parseId(id, 'Job group'));
  if (!group || group.owner !== principal.user) throw new NotFoundError(`Job group ${id} not found`);

  return group;
}

/** build.sr.ht's job group routes. */
export function registerGroupRoutes(app: Hono<ApiEnv>, context: ServiceContext): void {
  app.post('/api/job-group', async (c) => {
    const principal = requirePrincipal(c, 'jobs:write');
    const group = await createGroup(context, principal, validateGroupRequest(await readBody(c)));

    return c.json(await renderGroup(context, group), 200);
  });

  app.get('/api/job-group/:id', async (c) => {
    const group = await loadOwnGroup(c, context, 'jobs:read');

    return c.json(await renderGroup(context, group));
  });

  app.post('/api/job-group/:id/start', async (c) => {
    await startGroup(context, await loadOwnGroup(c, context, 'jobs:write'));

    return c.json({});
  });

  app.post('/api/job-group/:id/cancel', async (c) => {
    await cancelGroup(context, await loadOwnGroup(c, context, 'jobs:write'));

    return c.json({});
  });
}
