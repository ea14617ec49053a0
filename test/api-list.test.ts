import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { JobView } from '../lib/api/job-view.js';
import { createToken, type Scope } from '../lib/auth/tokens.js';
import { startTestStack, type TestStack, recordServerErrors, type ErrorBody } from './support/local-stack.js';

const MANIFEST = `image: alpine/latest
tasks:
  - hello: echo hello
`;

interface JobPage {
  next: string | null;
  results: JobView[];
  total: number;
  results_per_page: number;
}

describe('GET /api/jobs', () => {
  let stack: TestStack;
  let serverErrors: string[];
  const tokens = new Map<string, string>();

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

  /** Submits jobs one after another, so their ids increase in the order given. */
  async function submitInOrder(user: string, bodies: Array<Record<string, unknown>>): Promise<JobView[]> {
    const jobs: JobView[] = [];
    for (const body of bodies) jobs.push(await submitAs(user, body));

    return jobs;
  }

  async function list(user: string, query = ''): Promise<JobPage> {
    const response = await stack.api('GET', `/api/jobs${query}`, { token: await tokenFor(user) });
    expect(response.status).toBe(200);

    return (await response.json()) as JobPage;
  }

  beforeAll(async () => {
    stack = await startTestStack();
    serverErrors = recordServerErrors(stack);
  });
  afterEach(() => {
    expect(serverErrors.splice(0)).toEqual([]);
  });
  afterAll(async () => {
    await stack?.destroy();
  });

  it('returns an empty page for a user without jobs', async () => {
    const response = await stack.api('GET', '/api/jobs', { token: await tokenFor('nobody') });

    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ next: null, results: [], total: 0, results_per_page: 50 });
  });

  it("lists the caller's own jobs, newest first", async () => {
    const mine = await submitInOrder('owner_a', [{ note: 'one' }, { note: 'two' }, { note: 'three' }]);
    await submitInOrder('owner_b', [{ note: 'not mine' }]);

    const page = await list('owner_a');

    expect(page.results.map((job) => job.id)).toEqual(mine.map((job) => job.id).reverse());
    expect(page.results.every((job) => job.owner.name === 'owner_a')).toBe(true);
    expect(page.total).toBe(3);
    expect(page.next).toBeNull();
    expect(page.results_per_page).toBe(50);
  });

  it('renders each job as GET /api/jobs/:id does', async () => {
    const [job] = await submitInOrder('renderer', [{ note: 'shown', tags: ['x', 'y'] }]);
    const page = await list('renderer');

    expect(page.results).toEqual([job]);
    expect(page.results[0].tags).toBe('x/y');
    expect(page.results[0].status).toBe('pending');
  });

  describe('pages', () => {
    const user = 'pager';
    let ids: number[];

    beforeAll(async () => {
      // 110 jobs make two full pages and one of 10; even and odd tags let the filter tests page too.
      const jobs = await submitInOrder(
        user,
        Array.from({ length: 110 }, (_, index) => ({ tags: ['batch', index % 2 === 0 ? 'even' : 'odd'] })),
      );
      ids = jobs.map((job) => job.id).reverse();
    });

    it('returns 50 jobs and the next id', async () => {
      const page = await list(user);

      expect(page.results).toHaveLength(50);
      expect(page.results.map((job) => job.id)).toEqual(ids.slice(0, 50));
      expect(page.next).toBe(String(ids[50]));
      expect(typeof page.next).toBe('string');
      expect(page.total).toBe(110);
      expect(page.results_per_page).toBe(50);
    });

    it('walks every page through next', async () => {
      const seen: number[] = [];
      const sizes: number[] = [];
      let next: string | null = '';
      while (next !== null) {
        const page: JobPage = await list(user, next === '' ? '' : `?start=${next}`);
        expect(page.total).toBe(110);
        seen.push(...page.results.map((job) => job.id));
        sizes.push(page.results.length);
        next = page.next;
      }

      expect(sizes).toEqual([50, 50, 10]);
      expect(seen).toEqual(ids);
    });

    it('starts a page at start, including that job', async () => {
      const start = ids[17];
      const page = await list(user, `?start=${start}`);

      expect(page.results[0].id).toBe(start);
      expect(page.results.map((job) => job.id)).toEqual(ids.slice(17, 67));
      expect(page.next).toBe(String(ids[67]));
    });

    it('starts below a start id that belongs to no job of the caller', async () => {
      const other = await submitAs('pager_neighbour');
      const page = await list(user, `?start=${other.id}`);

      expect(page.results[0].id).toBe(ids[0]);
      expect(page.results[0].id).toBeLessThan(other.id);
    });

    it('returns an empty last page for a start below every job', async () => {
      const page = await list(user, `?start=${Math.min(...ids) - 1}`);

      expect(page.results).toEqual([]);
      expect(page.next).toBeNull();
      expect(page.total).toBe(110);
    });

    it('pages through a tags filter', async () => {
      const even = ids.filter((_, index) => index % 2 === 1);
      const first = await list(user, '?tags=batch/even');

      expect(first.total).toBe(55);
      expect(first.results.map((job) => job.id)).toEqual(even.slice(0, 50));
      expect(first.next).toBe(String(even[50]));

      const second = await list(user, `?tags=batch/even&start=${first.next}`);
      expect(second.results.map((job) => job.id)).toEqual(even.slice(50));
      expect(second.next).toBeNull();
      expect(second.total).toBe(55);
    });

    it('skips a start that the filter excludes', async () => {
      // ids[0] is the newest job, tagged odd (index 109), so the first even match is ids[1].
      const page = await list(user, `?tags=batch/even&start=${ids[0]}`);

      expect(page.results[0].id).toBe(ids[1]);
      expect(page.results[0].tags).toBe('batch/even');
    });
  });

  describe('tags filter', () => {
    const user = 'tagger';
    const jobs = new Map<string, number>();

    beforeAll(async () => {
      const tagSets: Array<string[] | undefined> = [['a', 'b'], ['a', 'bc'], ['a', 'b', 'c'], ['a'], ['x', 'a', 'b'], ['b', 'a'], undefined];
      for (const tags of tagSets) {
        const job = await submitAs(user, tags === undefined ? {} : { tags });
        jobs.set(tags === undefined ? '' : tags.join('/'), job.id);
      }
    });

    it.each([
      ['a/b', ['a/b/c', 'a/b']],
      ['a', ['a', 'a/b/c', 'a/bc', 'a/b']],
      ['a/bc', ['a/bc']],
      ['a/b/c', ['a/b/c']],
      ['a/b/c/d', []],
      ['b', ['b/a']],
      ['c', []],
    ])('tags=%s matches jobs whose tags begin with it', async (filter, expected) => {
      const page = await list(user, `?tags=${filter}`);

      expect(page.results.map((job) => job.tags)).toEqual(expected);
      expect(page.results.map((job) => job.id)).toEqual(expected.map((tags) => jobs.get(tags)));
      expect(page.total).toBe(expected.length);
      expect(page.next).toBeNull();
    });

    it('accepts the tags filter URL-encoded', async () => {
      const page = await list(user, `?tags=${encodeURIComponent('a/b')}`);

      expect(page.results.map((job) => job.tags)).toEqual(['a/b/c', 'a/b']);
    });

    it('lists every job for an empty tags filter', async () => {
      const page = await list(user, '?tags=');

      expect(page.total).toBe(7);
    });
  });

  describe('status filter', () => {
    const user = 'statuser';
    let pending: JobView[];
    let cancelled: JobView[];

    beforeAll(async () => {
      pending = await submitInOrder(user, [{ tags: ['keep'] }, { tags: ['drop'] }, { tags: ['keep'] }]);
      cancelled = await submitInOrder(user, [{ tags: ['keep'] }, { tags: ['drop'] }]);
      for (const job of cancelled) {
        const response = await stack.api('POST', `/api/jobs/${job.id}/cancel`, { token: await tokenFor(user) });
        expect(response.status).toBe(200);
      }
    });

    it.each([
      ['pending', () => pending],
      ['cancelled', () => cancelled],
      ['queued', () => []],
      ['running', () => []],
      ['success', () => []],
      ['failed', () => []],
      ['timeout', () => []],
    ])('status=%s lists only jobs in that state', async (status, expected) => {
      const page = await list(user, `?status=${status}`);
      const ids = expected()
        .map((job) => job.id)
        .reverse();

      expect(page.results.map((job) => job.id)).toEqual(ids);
      expect(page.results.every((job) => job.status === status)).toBe(true);
      expect(page.total).toBe(ids.length);
    });

    it('combines the status and tags filters', async () => {
      const page = await list(user, '?status=cancelled&tags=keep');

      expect(page.results.map((job) => job.id)).toEqual([cancelled[0].id]);
      expect(page.total).toBe(1);
    });
  });

  describe('invalid parameters', () => {
    it.each(['abc', '-1', '1.5', '1e3', '0x10'])('rejects start=%j with a 400 naming start', async (start) => {
      const response = await stack.api('GET', `/api/jobs?start=${encodeURIComponent(start)}`, { token: await tokenFor('badquery') });
      const body = (await response.json()) as ErrorBody;

      expect(response.status).toBe(400);
      expect(body.errors).toHaveLength(1);
      expect(body.errors[0].field).toBe('start');
      expect(body.errors[0].reason).toContain('start');
    });

    it.each(['done', 'finished', 'None', 'pending,queued'])('rejects status=%j with a 400 naming status', async (status) => {
      const response = await stack.api('GET', `/api/jobs?status=${encodeURIComponent(status)}`, {
        token: await tokenFor('badquery'),
      });
      const body = (await response.json()) as ErrorBody;

      expect(response.status).toBe(400);
      expect(body.errors).toHaveLength(1);
      expect(body.errors[0].field).toBe('status');
      expect(body.errors[0].reason).toContain('status');
    });
  });

  describe('authentication', () => {
    it('answers 401 without a token', async () => {
      const response = await stack.api('GET', '/api/jobs', { token: null });
      const body = (await response.json()) as ErrorBody;

      expect(response.status).toBe(401);
      expect(body.errors[0].reason).toMatch(/No token/);
    });

    it('answers 403 naming jobs:read for a token without it', async () => {
      const response = await stack.api('GET', '/api/jobs', { token: await tokenFor('writer_only', ['jobs:write']) });
      const body = (await response.json()) as ErrorBody;

      expect(response.status).toBe(403);
      expect(body.errors[0].reason).toContain('jobs:read');
    });
  });
});

describe('GET /api/jobs/:id/artifacts', () => {
  let stack: TestStack;
  let serverErrors: string[];

  interface ArtifactPage {
    next: string | null;
    results: Array<{ id: number; created: string; path: string; name: string; url: string; size: number }>;
    total: number;
    results_per_page: number;
  }

  /** Submits a job and stores `count` artifacts on it with ids 1 to `count`, as the runner records uploads. */
  async function jobWithArtifacts(count: number): Promise<number> {
    const job = await stack.submit({ manifest: MANIFEST, execute: false });
    const now = Date.now();
    const artifacts = Array.from({ length: count }, (_, index) => ({
      id: index + 1,
      path: `out/file-${index + 1}.txt`,
      name: `file-${index + 1}.txt`,
      key: `artifacts/${job.id}/file-${index + 1}.txt`,
      size: index,
      createdAt: now + index,
    }));
    await stack.context.stores.jobs.transition(job.id, (record) => ({ ...record, status: 'success', runner: 'local', artifacts }));

    return job.id;
  }

  async function artifactPage(jobId: number, query = ''): Promise<ArtifactPage> {
    const response = await stack.api('GET', `/api/jobs/${jobId}/artifacts${query}`);
    expect(response.status).toBe(200);

    return (await response.json()) as ArtifactPage;
  }

  beforeAll(async () => {
    stack = await startTestStack();
    serverErrors = recordServerErrors(stack);
  });
  afterEach(() => {
    expect(serverErrors.splice(0)).toEqual([]);
  });
  afterAll(async () => {
    await stack?.destroy();
  });

  it('returns an empty page until artifacts exist', async () => {
    const job = await stack.submit({ manifest: MANIFEST, execute: false });
    const response = await stack.api('GET', `/api/jobs/${job.id}/artifacts`);

    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ next: null, results: [], total: 0, results_per_page: 50 });
  });

  it('describes each artifact with a download link', async () => {
    const jobId = await jobWithArtifacts(2);
    const page = await artifactPage(jobId);

    expect(page.results[0]).toEqual({
      id: 2,
      created: expect.any(String),
      path: 'out/file-2.txt',
      name: 'file-2.txt',
      url: expect.stringContaining(`artifacts/${jobId}/file-2.txt`),
      size: 1,
    });
    expect(page.total).toBe(2);
    expect(page.next).toBeNull();
  });

  it('pages 50 artifacts at a time, newest first, like the job list', async () => {
    const jobId = await jobWithArtifacts(60);
    const first = await artifactPage(jobId);

    expect(first.results.map((artifact) => artifact.id)).toEqual(Array.from({ length: 50 }, (_, index) => 60 - index));
    expect(first.next).toBe('10');
    expect(first.total).toBe(60);
    expect(first.results_per_page).toBe(50);

    const second = await artifactPage(jobId, `?start=${first.next}`);
    expect(second.results.map((artifact) => artifact.id)).toEqual([10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
    expect(second.next).toBeNull();
    expect(second.total).toBe(60);
  });

  it('starts a page at start, including that artifact', async () => {
    const jobId = await jobWithArtifacts(5);
    const page = await artifactPage(jobId, '?start=3');

    expect(page.results.map((artifact) => artifact.id)).toEqual([3, 2, 1]);
    expect(page.total).toBe(5);
  });

  it.each(['abc', '-1', '1.5'])('rejects start=%j with a 400 naming start', async (start) => {
    const jobId = await jobWithArtifacts(1);
    const response = await stack.api('GET', `/api/jobs/${jobId}/artifacts?start=${encodeURIComponent(start)}`);
    const body = (await response.json()) as ErrorBody;

    expect(response.status).toBe(400);
    expect(body.errors[0].field).toBe('start');
  });
});
