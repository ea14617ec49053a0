import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { JobView } from '../lib/api/job-view.js';
import { createToken, type Scope } from '../lib/auth/tokens.js';
import { startTestStack, type TestStack, recordServerErrors, type ErrorBody } from './support/local-stack.js';

const MANIFEST = `image: alpine/latest
tasks:
  - hello: echo hello
`;

/**
 * Callers of the tables. `alice` owns every job. The private job names `bob`
 * in access:read as `~bob`, and `carol` and `erin` in access:write as `carol`
 * and `~erin`. No job names `dave`, and `anonymous` sends no token.
 * `alice-readonly` and `alice-writeonly` are alice with a token that lacks
 * jobs:write or jobs:read.
 */
type Caller = 'alice' | 'bob' | 'carol' | 'erin' | 'dave' | 'anonymous' | 'alice-readonly' | 'alice-writeonly';
type Visibility = 'public' | 'private';
type Outcome = 'allowed' | 401 | 403 | 404;

const ACCESS: Record<Visibility, Record<string, unknown>> = {
  // access:read defaults to ["*"].
  public: {},
  private: { 'access:read': ['~bob'], 'access:write': ['carol', '~erin'] },
};

/** Routes that read a job; a successful log request redirects to the log. */
const READ_ROUTES = [
  { name: 'job', path: (id: number) => `/api/jobs/${id}`, allowedStatus: 200 },
  { name: 'manifest', path: (id: number) => `/api/jobs/${id}/manifest`, allowedStatus: 200 },
  { name: 'setup log', path: (id: number) => `/api/jobs/${id}/log`, allowedStatus: 302 },
  { name: 'task log', path: (id: number) => `/api/jobs/${id}/tasks/hello/log`, allowedStatus: 302 },
  { name: 'artifacts', path: (id: number) => `/api/jobs/${id}/artifacts`, allowedStatus: 200 },
];

const WRITE_ROUTES = ['start', 'cancel'] as const;

/** Who may read which job, the same with and without anonymous reads, except for `anonymous`. */
const READ_CASES: Array<[Caller, Visibility, Outcome]> = [
  ['alice', 'public', 'allowed'],
  ['alice', 'private', 'allowed'],
  ['bob', 'public', 'allowed'],
  ['bob', 'private', 'allowed'],
  ['carol', 'public', 'allowed'],
  ['carol', 'private', 'allowed'],
  ['erin', 'public', 'allowed'],
  ['erin', 'private', 'allowed'],
  ['dave', 'public', 'allowed'],
  ['dave', 'private', 404],
  ['alice-readonly', 'public', 'allowed'],
  ['alice-readonly', 'private', 'allowed'],
  ['alice-writeonly', 'public', 403],
  ['alice-writeonly', 'private', 403],
];

/** Who may start and cancel which job: write access, or 403 for callers who can only read, 404 for the rest. */
const WRITE_CASES: Array<[Caller, Visibility, Outcome]> = [
  ['alice', 'public', 'allowed'],
  ['alice', 'private', 'allowed'],
  ['carol', 'private', 'allowed'],
  ['erin', 'private', 'allowed'],
  ['carol', 'public', 403],
  ['bob', 'public', 403],
  ['bob', 'private', 403],
  ['dave', 'public', 403],
  ['dave', 'private', 404],
  ['anonymous', 'public', 401],
  ['anonymous', 'private', 401],
  ['alice-readonly', 'public', 403],
  ['alice-readonly', 'private', 403],
];

const STACKS: Array<[string, Record<string, string>, boolean]> = [
  ['default settings', {}, false],
  ['KILN_ANONYMOUS_READ=true', { KILN_ANONYMOUS_READ: 'true' }, true],
];

describe.each(STACKS)('access control with %s', (_name, env, anonymousRead) => {
  let stack: TestStack;
  let serverErrors: string[];
  const tokens = new Map<Caller, string>();
  const finished = new Map<Visibility, JobView>();

  function tokenOf(caller: Caller): string | null {
    return caller === 'anonymous' ? null : tokens.get(caller)!;
  }

  async function submit(visibility: Visibility): Promise<JobView> {
    const response = await stack.api('POST', '/api/jobs', {
      token: tokens.get('alice'),
      body: { manifest: MANIFEST, execute: false, ...ACCESS[visibility] },
    });
    if (response.status !== 200) throw new Error(`submit: ${response.status} ${await response.text()}`);

    return (await response.json()) as JobView;
  }

  /**
   * Submits a job and records it as the runner leaves a finished build: with a
   * runner, so that its logs have links, and with one artifact.
   */
  async function submitFinished(visibility: Visibility): Promise<JobView> {
    const job = await submit(visibility);
    const now = Date.now();
    await stack.context.stores.jobs.transition(job.id, (record) => ({
      ...record,
      status: 'success',
      runner: 'local',
      tasks: record.tasks.map((task) => ({ ...task, status: 'success' })),
      finishedAt: now,
      artifacts: [{ id: 1, path: 'out/report.txt', name: 'report.txt', key: `artifacts/${job.id}/report.txt`, size: 6, createdAt: now }],
    }));

    return job;
  }

  function expectedStatus(outcome: Outcome, allowedStatus: number): number {
    return outcome === 'allowed' ? allowedStatus : outcome;
  }

  beforeAll(async () => {
    stack = await startTestStack(env);
    serverErrors = recordServerErrors(stack);
    const store = stack.context.stores.tokens;
    const full: Scope[] = ['jobs:read', 'jobs:write'];
    for (const user of ['alice', 'bob', 'carol', 'erin', 'dave'] as const) {
      tokens.set(user, (await createToken(store, { user, scopes: full })).token);
    }
    tokens.set('alice-readonly', (await createToken(store, { user: 'alice', scopes: ['jobs:read'] })).token);
    tokens.set('alice-writeonly', (await createToken(store, { user: 'alice', scopes: ['jobs:write'] })).token);
    for (const visibility of ['public', 'private'] as const) finished.set(visibility, await submitFinished(visibility));
  });
  afterEach(() => {
    expect(serverErrors.splice(0)).toEqual([]);
  });
  afterAll(async () => {
    await stack?.destroy();
  });

  describe('reading a job', () => {
    const cases = READ_ROUTES.flatMap((route) => READ_CASES.map(([caller, visibility, outcome]) => ({ route, caller, visibility, outcome })));

    it.each(cases)('$route.name of a $visibility job as $caller: $outcome', async ({ route, caller, visibility, outcome }) => {
      const job = finished.get(visibility)!;
      const response = await stack.api('GET', route.path(job.id), { token: tokenOf(caller) });

      expect(response.status).toBe(expectedStatus(outcome, route.allowedStatus));
      if (outcome === 404) {
        const body = (await response.json()) as ErrorBody;
        // The same response as for a job that does not exist, so private jobs do not reveal that they exist.
        expect(body).toEqual({ errors: [{ reason: `Job ${job.id} not found` }] });
      }
      if (outcome === 403) expect(((await response.json()) as ErrorBody).errors[0].reason).toContain('jobs:read');
    });

    function anonymousOutcome(visibility: Visibility): Outcome {
      if (!anonymousRead) return 401;

      return visibility === 'public' ? 'allowed' : 404;
    }

    const anonymousCases = READ_ROUTES.flatMap((route) =>
      (['public', 'private'] as const).map((visibility) => ({ route, visibility, outcome: anonymousOutcome(visibility) })),
    );

    it.each(anonymousCases)('$route.name of a $visibility job without a token: $outcome', async ({ route, visibility, outcome }) => {
      const job = finished.get(visibility)!;
      const response = await stack.api('GET', route.path(job.id), { token: null });

      expect(response.status).toBe(expectedStatus(outcome, route.allowedStatus));
      if (outcome === 401) expect(((await response.json()) as ErrorBody).errors[0].reason).toMatch(/No token/);
      if (outcome === 404) expect(await response.json()).toEqual({ errors: [{ reason: `Job ${job.id} not found` }] });
    });

    it('serves the content of each read route to a reader', async () => {
      const job = finished.get('private')!;
      const token = tokens.get('bob');

      const view = (await (await stack.api('GET', `/api/jobs/${job.id}`, { token })).json()) as JobView;
      expect(view.id).toBe(job.id);
      expect(view.status).toBe('success');
      expect(await (await stack.api('GET', `/api/jobs/${job.id}/manifest`, { token })).text()).toBe(MANIFEST);
      const setupLog = await stack.api('GET', `/api/jobs/${job.id}/log`, { token });
      expect(setupLog.headers.get('location')).toContain(`logs/${job.id}/setup.log`);
      const taskLog = await stack.api('GET', `/api/jobs/${job.id}/tasks/hello/log`, { token });
      expect(taskLog.headers.get('location')).toContain(`logs/${job.id}/tasks/hello.log`);
      const artifacts = (await (await stack.api('GET', `/api/jobs/${job.id}/artifacts`, { token })).json()) as {
        results: Array<{ name: string; url: string }>;
        total: number;
      };
      expect(artifacts.total).toBe(1);
      expect(artifacts.results[0].name).toBe('report.txt');
      expect(artifacts.results[0].url).toContain(`artifacts/${job.id}/report.txt`);
    });

    it('answers 401 for an unknown token even on a public job', async () => {
      const job = finished.get('public')!;
      const response = await stack.api('GET', `/api/jobs/${job.id}`, { token: 'kiln_not_a_real_token' });

      expect(response.status).toBe(401);
      expect(((await response.json()) as ErrorBody).errors[0].reason).toMatch(/Unknown token/);
    });
  });

  describe('changing a job', () => {
    const cases = WRITE_ROUTES.flatMap((action) => WRITE_CASES.map(([caller, visibility, outcome]) => ({ action, caller, visibility, outcome })));

    it.each(cases)('$action a $visibility job as $caller: $outcome', async ({ action, caller, visibility, outcome }) => {
      const job = await submit(visibility);
      const response = await stack.api('POST', `/api/jobs/${job.id}/${action}`, { token: tokenOf(caller) });
      const after = await stack.context.stores.jobs.get(job.id);

      expect(response.status).toBe(expectedStatus(outcome, 200));
      if (outcome === 'allowed') {
        expect(await response.json()).toEqual({});
        expect(after.status).not.toBe('pending');
        return;
      }

      expect(after.status).toBe('pending');
      const reason = ((await response.json()) as ErrorBody).errors[0].reason;
      if (outcome === 401) expect(reason).toMatch(/No token/);
      if (outcome === 404) expect(reason).toBe(`Job ${job.id} not found`);
      if (outcome === 403 && caller === 'alice-readonly') expect(reason).toContain('jobs:write');
      if (outcome === 403 && caller !== 'alice-readonly') expect(reason).toContain('access:write');
    });
  });

  describe('listing, submitting and groups', () => {
    it.each([
      ['GET', '/api/jobs'],
      ['POST', '/api/jobs'],
      ['POST', '/api/job-group'],
      ['GET', '/api/job-group/1'],
      ['POST', '/api/job-group/1/start'],
      ['POST', '/api/job-group/1/cancel'],
    ])('answers 401 to %s %s without a token', async (method, route) => {
      const body = method === 'POST' ? { manifest: MANIFEST, jobs: [finished.get('public')!.id] } : undefined;
      const response = await stack.api(method, route, { token: null, body });

      expect(response.status).toBe(401);
      expect(((await response.json()) as ErrorBody).errors[0].reason).toMatch(/No token/);
    });

    it("lists only the caller's own jobs, not public jobs of others", async () => {
      const response = await stack.api('GET', '/api/jobs', { token: tokens.get('dave') });
      const page = (await response.json()) as { results: JobView[]; total: number };

      expect(response.status).toBe(200);
      expect(page.results).toEqual([]);
      expect(page.total).toBe(0);
    });
  });
});
