import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { JobView } from '../lib/api/job-view.js';
import { createToken, type Scope } from '../lib/auth/tokens.js';
import type { JobStatus } from '../lib/jobs/state.js';
import type { JobRecord } from '../lib/store/index.js';
import { startTestStack, type TestStack, recordServerErrors, type ErrorBody } from './support/local-stack.js';

const MANIFEST = `image: alpine/latest
tasks:
  - hello: echo hello
`;

const SLEEP_MANIFEST = `image: alpine/latest
tasks:
  - wait: sleep 600
  - after: echo after
`;

/** How long a test polls for a build to reach a state before it fails with a message. */
const POLL_GIVE_UP_MS = 45_000;

interface GroupView {
  id: number;
  created: string;
  note: string | null;
  owner: { canonical_name: string; name: string };
  jobs: JobView[];
  triggers: unknown[];
}

describe('job groups', () => {
  let stack: TestStack;
  let serverErrors: string[];
  const tokens = new Map<string, string>();
  /** Every committed status change, as `<id> <from>-><to>`. */
  const moves: string[] = [];

  async function tokenFor(user: string, scopes: Scope[] = ['jobs:read', 'jobs:write']): Promise<string> {
    const key = `${user} ${scopes.join(',')}`;
    if (!tokens.has(key)) tokens.set(key, (await createToken(stack.context.stores.tokens, { user, scopes })).token);

    return tokens.get(key)!;
  }

  async function submitAs(user: string, body: Record<string, unknown> = {}): Promise<JobView> {
    const response = await stack.api('POST', '/api/jobs', {
      token: await tokenFor(user),
      body: { manifest: MANIFEST, execute: false, ...body },
    });
    if (response.status !== 200) throw new Error(`submit as ${user}: ${response.status} ${await response.text()}`);

    return (await response.json()) as JobView;
  }

  async function submitMany(user: string, count: number, body: Record<string, unknown> = {}): Promise<number[]> {
    const ids: number[] = [];
    for (let index = 0; index < count; index++) ids.push((await submitAs(user, body)).id);

    return ids;
  }

  async function createGroupAs(user: string, body: unknown): Promise<Response> {
    return stack.api('POST', '/api/job-group', { token: await tokenFor(user), body });
  }

  async function createdGroup(user: string, body: unknown): Promise<GroupView> {
    const response = await createGroupAs(user, body);
    if (response.status !== 200) throw new Error(`create group as ${user}: ${response.status} ${await response.text()}`);

    return (await response.json()) as GroupView;
  }

  async function statusOf(id: number): Promise<JobStatus> {
    return (await stack.context.stores.jobs.get(id)).status;
  }

  async function waitForStatus(id: number, done: (job: JobRecord) => boolean, what: string): Promise<JobRecord> {
    const giveUpAt = Date.now() + POLL_GIVE_UP_MS;
    for (;;) {
      const job = await stack.context.stores.jobs.get(id);
      if (done(job)) return job;
      if (Date.now() > giveUpAt) throw new Error(`job ${id} never became ${what}; last status ${job.status}`);
      await sleep(100);
    }
  }

  async function errorOf(response: Response): Promise<ErrorBody['errors'][number]> {
    const body = (await response.json()) as ErrorBody;
    expect(body.errors).toHaveLength(1);

    return body.errors[0];
  }

  beforeAll(async () => {
    stack = await startTestStack();
    serverErrors = recordServerErrors(stack);
    stack.context.stores.jobs.on('status', (job: JobRecord, previous: JobStatus | null) => {
      moves.push(`${job.id} ${previous}->${job.status}`);
    });
  });
  afterEach(() => {
    expect(serverErrors.splice(0)).toEqual([]);
  });
  afterAll(async () => {
    await stack?.destroy();
  });

  describe('POST /api/job-group', () => {
    it('creates a group of pending jobs and leaves them pending', async () => {
      const ids = await submitMany('grouper', 3);
      const triggers = [{ action: 'email', condition: 'always', to: 'ci@example.org' }];
      const response = await createGroupAs('grouper', { jobs: ids, note: 'release', triggers });
      const group = (await response.json()) as GroupView;

      expect(response.status).toBe(200);
      expect(group.id).toBeGreaterThan(0);
      expect(group.note).toBe('release');
      expect(group.owner).toEqual({ canonical_name: '~grouper', name: 'grouper' });
      expect(group.jobs.map((job) => job.id)).toEqual(ids);
      expect(group.jobs.every((job) => job.status === 'pending')).toBe(true);
      expect(group.triggers).toEqual([expect.objectContaining({ action: 'email', condition: 'always', to: 'ci@example.org' })]);
      expect(Number.isNaN(Date.parse(group.created))).toBe(false);
      for (const id of ids) expect(await statusOf(id)).toBe('pending');
    });

    it('serves the same group from GET /api/job-group/:id', async () => {
      const ids = await submitMany('grouper', 2);
      const created = await createdGroup('grouper', { jobs: ids, note: 'again' });
      const response = await stack.api('GET', `/api/job-group/${created.id}`, { token: await tokenFor('grouper') });

      expect(response.status).toBe(200);
      expect(await response.json()).toEqual(created);
    });

    it('queues every job when execute is true', async () => {
      const ids = await submitMany('grouper', 2);
      await createdGroup('grouper', { jobs: ids, execute: true });

      for (const id of ids) expect(moves).toContain(`${id} pending->queued`);
      for (const id of ids) expect(await statusOf(id)).not.toBe('pending');
    });

    it('accepts a form-encoded body with repeated jobs and execute "false"', async () => {
      const ids = await submitMany('grouper', 2);
      const body = new URLSearchParams([...ids.map((id) => ['jobs', String(id)]), ['execute', 'false'], ['note', 'form']]);
      const response = await stack.api('POST', '/api/job-group', {
        token: await tokenFor('grouper'),
        body: body.toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      const group = (await response.json()) as GroupView;

      expect(response.status).toBe(200);
      expect(group.jobs.map((job) => job.id)).toEqual(ids);
      expect(group.note).toBe('form');
      for (const id of ids) expect(await statusOf(id)).toBe('pending');
    });

    it('rejects a job from another group', async () => {
      const [a, b, c] = await submitMany('grouper', 3);
      const first = await createdGroup('grouper', { jobs: [c] });

      const response = await createGroupAs('grouper', { jobs: [a, b, c] });
      const error = await errorOf(response);

      expect(response.status).toBe(400);
      expect(error.field).toBe('jobs');
      expect(error.reason).toContain(`job ${c}`);
      expect(error.reason).toContain(`job group ${first.id}`);

      const second = await createdGroup('grouper', { jobs: [a, b] });
      expect(second.jobs.map((job) => job.id)).toEqual([a, b]);
      const firstAfter = await stack.api('GET', `/api/job-group/${first.id}`, { token: await tokenFor('grouper') });
      expect(((await firstAfter.json()) as GroupView).jobs.map((job) => job.id)).toEqual([c]);
    });

    it('lets exactly one of racing group creations take a shared job', async () => {
      const [shared] = await submitMany('racer', 1);
      const own = await submitMany('racer', 8);
      const responses = await Promise.all(own.map((id) => createGroupAs('racer', { jobs: [id, shared] })));
      const statuses = responses.map((response) => response.status);

      expect(statuses.filter((status) => status === 200)).toHaveLength(1);
      expect(statuses.filter((status) => status === 400)).toHaveLength(7);
      const winner = own[statuses.indexOf(200)];
      const losers = own.filter((id) => id !== winner);
      for (const response of responses.filter((candidate) => candidate.status === 400)) {
        const error = await errorOf(response);
        expect(error.field).toBe('jobs');
        expect(error.reason).toContain(`job ${shared}`);
      }

      // The losers released their own jobs, so those can form a group of their own.
      const rest = await createdGroup('racer', { jobs: losers });
      expect(rest.jobs.map((job) => job.id)).toEqual(losers);
      expect((await createGroupAs('racer', { jobs: [shared] })).status).toBe(400);
    });

    it.each([
      ['cancelled', 'cancelled'],
      ['queued', 'queued'],
      ['finished', 'success'],
    ] as const)('rejects a %s job and leaves the pending ones free', async (_case, status) => {
      const [pending, other] = await submitMany('grouper', 2);
      await stack.context.stores.jobs.transition(other, (job) => ({ ...job, status }));

      const response = await createGroupAs('grouper', { jobs: [pending, other] });
      const error = await errorOf(response);

      expect(response.status).toBe(400);
      expect(error.field).toBe('jobs');
      expect(error.reason).toContain(`job ${other} is ${status}`);
      expect((await createdGroup('grouper', { jobs: [pending] })).jobs.map((job) => job.id)).toEqual([pending]);
    });

    it('rejects a job that was started through the API', async () => {
      const [started] = await submitMany('grouper', 1);
      expect((await stack.api('POST', `/api/jobs/${started}/start`, { token: await tokenFor('grouper') })).status).toBe(200);

      const response = await createGroupAs('grouper', { jobs: [started] });

      expect(response.status).toBe(400);
      expect((await errorOf(response)).field).toBe('jobs');
    });

    it("rejects another user's job, and leaves both users' jobs free", async () => {
      const [mine] = await submitMany('grouper', 1);
      const [theirs] = await submitMany('stranger', 1);

      const response = await createGroupAs('grouper', { jobs: [mine, theirs] });
      const error = await errorOf(response);

      expect(response.status).toBe(400);
      expect(error.field).toBe('jobs');
      expect(error.reason).toContain(`job ${theirs} not found`);
      expect((await createdGroup('stranger', { jobs: [theirs] })).owner.name).toBe('stranger');
      expect((await createdGroup('grouper', { jobs: [mine] })).owner.name).toBe('grouper');
    });

    it('rejects a job id that does not exist', async () => {
      const [mine] = await submitMany('grouper', 1);
      const response = await createGroupAs('grouper', { jobs: [mine, 999_999] });
      const error = await errorOf(response);

      expect(response.status).toBe(400);
      expect(error.field).toBe('jobs');
      expect(error.reason).toContain('999999');
      expect((await createdGroup('grouper', { jobs: [mine] })).jobs).toHaveLength(1);
    });

    it.each([
      ['no jobs', {}, 'jobs'],
      ['an empty jobs list', { jobs: [] }, 'jobs'],
      ['jobs that are not a list', { jobs: { id: 1 } }, 'jobs'],
      ['a job id of zero', { jobs: [0] }, 'jobs'],
      ['a negative job id', { jobs: [-4] }, 'jobs'],
      ['a fractional job id', { jobs: [1.5] }, 'jobs'],
      ['a job id that is a word', { jobs: ['abc'] }, 'jobs'],
      ['a job id that is null', { jobs: [null] }, 'jobs'],
      ['a job listed twice', { jobs: [1, 1] }, 'jobs'],
      ['more than 100 jobs', { jobs: Array.from({ length: 101 }, (_, index) => index + 1) }, 'jobs'],
      ['a note that is not a string', { jobs: [1], note: 5 }, 'note'],
      ['an execute that is not a boolean', { jobs: [1], execute: 'maybe' }, 'execute'],
      ['triggers that are not a list', { jobs: [1], triggers: 'email' }, 'triggers'],
      ['a trigger without an action', { jobs: [1], triggers: [{ condition: 'always' }] }, 'triggers[0].action'],
    ])('rejects %s with a 400 on its field', async (_case, body, field) => {
      const response = await createGroupAs('validator', body);
      const result = (await response.json()) as ErrorBody;

      expect(response.status).toBe(400);
      expect(result.errors.map((error) => error.field)).toContain(field);
    });

    it.each([
      ['a boolean', () => true],
      ['a list around the id', (id: number) => [id]],
      ['the id in hexadecimal', (id: number) => `0x${id.toString(16)}`],
      ['the id with an exponent', (id: number) => `${id}e0`],
      ['the id with a decimal point', (id: number) => `${id}.0`],
      ['an empty string', () => ''],
    ])('rejects a job id given as %s, which is not a job id', async (_case, encode) => {
      const [id] = await submitMany('validator', 1);
      const response = await createGroupAs('validator', { jobs: [encode(id)] });
      const error = await errorOf(response);

      expect(response.status).toBe(400);
      expect(error.field).toBe('jobs');
      expect(error.reason).toMatch(/is not a job id/);
      expect((await createdGroup('validator', { jobs: [id] })).jobs.map((job) => job.id)).toEqual([id]);
    });

    it.each([
      ['not JSON', '{"jobs": ['],
      ['a JSON list', '[1]'],
    ])('rejects a body that is %s', async (_case, body) => {
      const response = await stack.api('POST', '/api/job-group', {
        token: await tokenFor('validator'),
        body,
        headers: { 'content-type': 'application/json' },
      });
      const error = await errorOf(response);

      expect(response.status).toBe(400);
      expect(error).not.toHaveProperty('field');
    });
  });

  describe('POST /api/job-group/:id/start', () => {
    it('queues every job of the group and answers {}', async () => {
      const ids = await submitMany('starter', 3);
      const group = await createdGroup('starter', { jobs: ids });

      const response = await stack.api('POST', `/api/job-group/${group.id}/start`, { token: await tokenFor('starter') });

      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({});
      for (const id of ids) expect(moves).toContain(`${id} pending->queued`);
      for (const id of ids) expect(await statusOf(id)).not.toBe('pending');
    });

    it('rejects a second start with a 400', async () => {
      const ids = await submitMany('starter', 2);
      const group = await createdGroup('starter', { jobs: ids });
      const token = await tokenFor('starter');
      expect((await stack.api('POST', `/api/job-group/${group.id}/start`, { token })).status).toBe(200);

      const response = await stack.api('POST', `/api/job-group/${group.id}/start`, { token });
      const error = await errorOf(response);

      expect(response.status).toBe(400);
      expect(error.reason).toMatch(/already been started/);
      expect(error).not.toHaveProperty('field');
    });

    it('queues every job exactly once among racing starts', async () => {
      const ids = await submitMany('starter', 4);
      const group = await createdGroup('starter', { jobs: ids });
      const token = await tokenFor('starter');

      const responses = await Promise.all(
        Array.from({ length: 4 }, () => stack.api('POST', `/api/job-group/${group.id}/start`, { token })),
      );

      for (const response of responses) expect([200, 400]).toContain(response.status);
      for (const id of ids) expect(moves.filter((move) => move === `${id} pending->queued`)).toHaveLength(1);
    });

    it('starts the jobs that are still pending when some were cancelled', async () => {
      const [cancelled, pending] = await submitMany('starter', 2);
      const group = await createdGroup('starter', { jobs: [cancelled, pending] });
      const token = await tokenFor('starter');
      expect((await stack.api('POST', `/api/jobs/${cancelled}/cancel`, { token })).status).toBe(200);

      const response = await stack.api('POST', `/api/job-group/${group.id}/start`, { token });

      expect(response.status).toBe(200);
      expect(await statusOf(cancelled)).toBe('cancelled');
      expect(moves).toContain(`${pending} pending->queued`);
    });
  });

  describe('POST /api/job-group/:id/cancel', () => {
    it('cancels every job of the group and answers {}', async () => {
      const ids = await submitMany('stopper', 3);
      const group = await createdGroup('stopper', { jobs: ids });

      const response = await stack.api('POST', `/api/job-group/${group.id}/cancel`, { token: await tokenFor('stopper') });

      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({});
      for (const id of ids) expect(await statusOf(id)).toBe('cancelled');
    });

    it('cancels the rest when one job was cancelled before', async () => {
      const ids = await submitMany('stopper', 3);
      const group = await createdGroup('stopper', { jobs: ids });
      const token = await tokenFor('stopper');
      expect((await stack.api('POST', `/api/jobs/${ids[0]}/cancel`, { token })).status).toBe(200);

      const response = await stack.api('POST', `/api/job-group/${group.id}/cancel`, { token });

      expect(response.status).toBe(200);
      for (const id of ids) expect(await statusOf(id)).toBe('cancelled');
    });

    it('rejects cancelling a group whose jobs have all finished', async () => {
      const ids = await submitMany('stopper', 2);
      const group = await createdGroup('stopper', { jobs: ids });
      const token = await tokenFor('stopper');
      expect((await stack.api('POST', `/api/job-group/${group.id}/cancel`, { token })).status).toBe(200);

      const response = await stack.api('POST', `/api/job-group/${group.id}/cancel`, { token });
      const error = await errorOf(response);

      expect(response.status).toBe(400);
      expect(error.reason).toMatch(/already finished/);
      expect(error).not.toHaveProperty('field');
    });

    // Needs the runner in lib/runner/ to run builds.
    it('cancels running jobs of a started group (needs the runner)', async () => {
      const ids = await submitMany('stopper', 2, { manifest: SLEEP_MANIFEST });
      const group = await createdGroup('stopper', { jobs: ids });
      const token = await tokenFor('stopper');
      expect((await stack.api('POST', `/api/job-group/${group.id}/start`, { token })).status).toBe(200);
      for (const id of ids) {
        await waitForStatus(id, (job) => job.tasks[0].status === 'running', 'running its first task (does the runner run builds?)');
      }

      const response = await stack.api('POST', `/api/job-group/${group.id}/cancel`, { token });

      expect(response.status).toBe(200);
      for (const id of ids) {
        const job = await stack.context.stores.jobs.get(id);
        expect(job.status).toBe('cancelled');
        expect(job.tasks.map((task) => task.status)).toEqual(['failed', 'skipped']);
      }
    });
  });

  describe('access', () => {
    let group: GroupView;

    beforeAll(async () => {
      group = await createdGroup('keeper', { jobs: await submitMany('keeper', 2) });
    });

    it.each([
      ['GET', ''],
      ['POST', '/start'],
      ['POST', '/cancel'],
    ])("answers 404 to %s %s on another user's group", async (method, suffix) => {
      const response = await stack.api(method, `/api/job-group/${group.id}${suffix}`, { token: await tokenFor('intruder') });

      expect(response.status).toBe(404);
      expect((await errorOf(response)).reason).toContain(`${group.id}`);
      for (const job of group.jobs) expect(await statusOf(job.id)).toBe('pending');
    });

    it.each([
      ['POST', '/api/job-group'],
      ['GET', '/api/job-group/GROUP'],
      ['POST', '/api/job-group/GROUP/start'],
      ['POST', '/api/job-group/GROUP/cancel'],
    ])('answers 401 to %s %s without a token', async (method, route) => {
      const body = method === 'POST' ? {} : undefined;
      const response = await stack.api(method, route.replace('GROUP', String(group.id)), { token: null, body });

      expect(response.status).toBe(401);
      expect((await errorOf(response)).reason).toMatch(/No token/);
    });

    it('lets a read-only token read the group but not change it', async () => {
      const readOnly = await tokenFor('keeper', ['jobs:read']);
      expect((await stack.api('GET', `/api/job-group/${group.id}`, { token: readOnly })).status).toBe(200);

      for (const route of ['/api/job-group', `/api/job-group/${group.id}/start`, `/api/job-group/${group.id}/cancel`]) {
        const response = await stack.api('POST', route, { token: readOnly, body: { jobs: [group.jobs[0].id] } });
        expect(response.status).toBe(403);
        expect((await errorOf(response)).reason).toContain('jobs:write');
      }
      for (const job of group.jobs) expect(await statusOf(job.id)).toBe('pending');
    });

    it.each(['999999', 'abc', '0', '1.5', '-2'])('answers 404 for group id %s', async (id) => {
      for (const [method, suffix] of [['GET', ''], ['POST', '/start'], ['POST', '/cancel']]) {
        const response = await stack.api(method, `/api/job-group/${id}${suffix}`, { token: await tokenFor('keeper') });
        expect(response.status).toBe(404);
        expect((await errorOf(response)).reason.length).toBeGreaterThan(5);
      }
    });
  });
});
