import type { KeyObject } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobView } from '../lib/api/job-view.js';
import { consumeTriggerMessage } from '../lib/triggers/run-triggers.js';
import type { HostResolver, ResolvedAddress } from '../lib/triggers/webhook.js';
import { isEnded, startTestStack, type TestStack } from './support/local-stack.js';
import { manifestWithTriggers, readSetupLog, waitForSetupLog } from './support/triggers.js';
import { hasValidSignature, publicKeyFromBase64, startWebhookReceiver, type WebhookReceiver } from './support/webhook-receiver.js';

/** Made-up host names and what the injected resolver returns for them; nothing is ever sent to these addresses. */
const MADE_UP_HOSTS: Record<string, ResolvedAddress[]> = {
  'hooks.kiln-test.invalid': [{ address: '127.0.0.1', family: 4 }],
  'metadata.kiln-test.invalid': [{ address: '169.254.169.254', family: 4 }],
  'ecs-metadata.kiln-test.invalid': [{ address: '169.254.170.2', family: 4 }],
  'metadata6.kiln-test.invalid': [{ address: 'fd00:ec2::254', family: 6 }],
  'link-local.kiln-test.invalid': [{ address: 'fe80::1', family: 6 }],
  'mapped-metadata.kiln-test.invalid': [{ address: '::ffff:169.254.169.254', family: 6 }],
  'mixed.kiln-test.invalid': [
    { address: '127.0.0.1', family: 4 },
    { address: '169.254.169.254', family: 4 },
  ],
  'private.kiln-test.invalid': [{ address: '10.20.30.40', family: 4 }],
};

/** Resolves only the made-up names above and counts the calls per name. */
function madeUpResolver(calls: Map<string, number>, overrides: Map<string, ResolvedAddress[][]>): HostResolver {
  return async (hostname) => {
    calls.set(hostname, (calls.get(hostname) ?? 0) + 1);
    const planned = overrides.get(hostname);
    if (planned && planned.length > 0) return planned.shift()!;
    const addresses = MADE_UP_HOSTS[hostname];
    if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' });

    return addresses;
  };
}

async function fetchPublicKey(stack: TestStack): Promise<{ text: string; key: KeyObject }> {
  const response = await stack.api('GET', '/api/webhooks/public-key', { token: null });
  expect(response.status).toBe(200);
  const text = await response.text();

  return { text, key: publicKeyFromBase64(text) };
}

function jobOf(body: Buffer): JobView {
  return JSON.parse(body.toString('utf8')) as JobView;
}

describe('webhook triggers', () => {
  let stack: TestStack;
  let receiver: WebhookReceiver;
  let publicKey: KeyObject;
  const resolverCalls = new Map<string, number>();
  const resolverOverrides = new Map<string, ResolvedAddress[][]>();

  beforeAll(async () => {
    receiver = await startWebhookReceiver();
    stack = await startTestStack({ KILN_WEBHOOK_ALLOW_PRIVATE: 'true', KILN_JOB_TIMEOUT: '4s' }, undefined, {
      triggers: { resolveHost: madeUpResolver(resolverCalls, resolverOverrides), retryDelaysMs: [200, 400] },
    });
    publicKey = (await fetchPublicKey(stack)).key;
  });
  afterAll(async () => {
    await stack?.destroy();
    await receiver?.close();
  });

  function hook(condition: string, route: string, base = receiver.url) {
    return { action: 'webhook', condition, url: `${base}${route}` };
  }

  async function runJob(tasks: Record<string, string>, triggers: Array<Record<string, string>>, body: Record<string, unknown> = {}) {
    const submitted = await stack.submit({ manifest: manifestWithTriggers(tasks, triggers), ...body });

    return stack.waitForJob(submitted.id, isEnded);
  }

  it('serves the public key without a token', async () => {
    const { text } = await fetchPublicKey(stack);

    expect(text).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(text, 'base64')).toHaveLength(32);
  });

  it('posts the signed job on success and always, not on failure', async () => {
    const job = await runJob({ hi: 'echo hi' }, [hook('success', '/ok/success'), hook('failure', '/ok/failure'), hook('always', '/ok/always')]);
    const [success] = await receiver.waitFor('/ok/success');
    const [always] = await receiver.waitFor('/ok/always');
    await waitForSetupLog(stack, job.id, /^\[kiln\] Webhook .*delivered, HTTP 200$/, 2);

    expect(job.status).toBe('success');
    expect(receiver.at('/ok/failure')).toHaveLength(0);
    for (const request of [success, always]) {
      expect(hasValidSignature(request, publicKey)).toBe(true);
      expect(request.headers['content-type']).toBe('application/json');
      expect(request.headers['x-payload-nonce']).toMatch(/^[0-9a-f]{16}$/);
      expect(request.headers.host).toBe(`127.0.0.1:${receiver.port}`);
    }
    expect(success.headers['x-payload-nonce']).not.toBe(always.headers['x-payload-nonce']);
  });

  it('sends the API job shape with stable log links', async () => {
    const job = await runJob({ build: 'echo build' }, [hook('always', '/shape')], { note: 'shape', tags: ['one', 'two'] });
    const [request] = await receiver.waitFor('/shape');
    const body = jobOf(request.body);

    expect(body).toEqual({
      id: job.id,
      status: 'success',
      setup_log: `${stack.apiUrl}/api/jobs/${job.id}/log`,
      tasks: [{ name: 'build', status: 'success', log: `${stack.apiUrl}/api/jobs/${job.id}/tasks/build/log` }],
      note: 'shape',
      tags: 'one/two',
      runner: 'local',
      owner: { canonical_name: '~local', name: 'local' },
    });
    expect(request.body.toString()).not.toMatch(/X-Amz-|Signature=/);
    const redirect = await stack.api('GET', new URL(body.tasks[0].log!).pathname);
    expect(redirect.status).toBe(302);
  });

  it('posts on failure of a failed job', async () => {
    const job = await runJob({ broken: 'exit 3' }, [hook('success', '/failed/success'), hook('failure', '/failed/failure')]);
    const [request] = await receiver.waitFor('/failed/failure');
    await waitForSetupLog(stack, job.id, /Webhook .*\/failed\/failure .*delivered/);

    expect(job.status).toBe('failed');
    expect(jobOf(request.body).status).toBe('failed');
    expect(hasValidSignature(request, publicKey)).toBe(true);
    expect(receiver.at('/failed/success')).toHaveLength(0);
  });

  it('posts on failure of a cancelled job', async () => {
    const submitted = await stack.submit({
      manifest: manifestWithTriggers({ wait: 'sleep 600' }, [hook('failure', '/cancelled/failure'), hook('success', '/cancelled/success')]),
    });
    await stack.waitForJob(submitted.id, (job) => job.tasks[0].status === 'running');
    const cancel = await stack.api('POST', `/api/jobs/${submitted.id}/cancel`);
    expect(cancel.status).toBe(200);

    const [request] = await receiver.waitFor('/cancelled/failure');

    expect(jobOf(request.body).status).toBe('cancelled');
    expect(hasValidSignature(request, publicKey)).toBe(true);
    expect(receiver.at('/cancelled/success')).toHaveLength(0);
  });

  it('posts on failure of a job that timed out', async () => {
    const job = await runJob({ slow: 'sleep 600' }, [hook('failure', '/timeout/failure'), hook('always', '/timeout/always')]);
    const [failure] = await receiver.waitFor('/timeout/failure');
    const [always] = await receiver.waitFor('/timeout/always');

    expect(job.status).toBe('timeout');
    expect(jobOf(failure.body).status).toBe('timeout');
    expect(jobOf(always.body).status).toBe('timeout');
  });

  it('runs the triggers of the job request too', async () => {
    const job = await runJob({ hi: 'echo hi' }, [hook('always', '/both/manifest')], { triggers: [hook('success', '/both/request')] });
    const [request] = await receiver.waitFor('/both/request');
    await receiver.waitFor('/both/manifest');

    expect(jobOf(request.body).id).toBe(job.id);
    expect(hasValidSignature(request, publicKey)).toBe(true);
  });

  it('tries three times and logs each attempt', async () => {
    receiver.respond('/flaky', [500, 500, 200]);
    const job = await runJob({ hi: 'echo hi' }, [hook('always', '/flaky')]);
    const requests = await receiver.waitFor('/flaky', 3);
    const log = await waitForSetupLog(stack, job.id, /attempt 3 of 3: delivered, HTTP 200/);

    expect(log).toMatch(/Webhook http:\/\/127\.0\.0\.1:\d+\/flaky \(on always\), attempt 1 of 3: failed: HTTP 500; trying again in 0\.2 s/);
    expect(log).toMatch(/attempt 2 of 3: failed: HTTP 500; trying again in 0\.4 s/);
    expect(new Set(requests.map((request) => request.headers['x-payload-nonce'])).size).toBe(3);
    expect(requests.every((request) => hasValidSignature(request, publicKey))).toBe(true);
    await sleep(500);
    expect(receiver.at('/flaky')).toHaveLength(3);
  });

  it('gives up after three failed attempts', async () => {
    receiver.respond('/down', [503, 503, 503, 503]);
    const job = await runJob({ hi: 'echo hi' }, [hook('always', '/down')]);
    const log = await waitForSetupLog(stack, job.id, /attempt 3 of 3: failed: HTTP 503$/);

    expect(receiver.at('/down')).toHaveLength(3);
    expect(log).not.toMatch(/attempt 4/);
  });

  it('does not retry a client error or follow a redirect', async () => {
    receiver.respond('/gone', [404]);
    receiver.respond('/moved', [302]);
    const job = await runJob({ hi: 'echo hi' }, [hook('always', '/gone'), hook('always', '/moved')]);
    const log = await waitForSetupLog(stack, job.id, /attempt 1 of 3: failed: HTTP (404|302)/, 2);

    expect(log).toMatch(/\/moved \(on always\), attempt 1 of 3: failed: HTTP 302; redirects are not followed$/m);
    expect(receiver.at('/gone')).toHaveLength(1);
    expect(receiver.at('/moved')).toHaveLength(1);
  });

  it('connects to the checked address with the URL host in Host', async () => {
    const base = `http://hooks.kiln-test.invalid:${receiver.port}`;
    const job = await runJob({ hi: 'echo hi' }, [hook('always', '/by-name', base)]);
    const [request] = await receiver.waitFor('/by-name');

    expect(request.headers.host).toBe(`hooks.kiln-test.invalid:${receiver.port}`);
    expect(hasValidSignature(request, publicKey)).toBe(true);
    expect(jobOf(request.body).id).toBe(job.id);
  });

  it('resolves once per attempt, so a changed answer cannot redirect the request', async () => {
    const host = 'rebind.kiln-test.invalid';
    resolverOverrides.set(host, [[{ address: '127.0.0.1', family: 4 }], [{ address: '169.254.169.254', family: 4 }]]);
    const job = await runJob({ hi: 'echo hi' }, [hook('always', '/rebind', `http://${host}:${receiver.port}`)]);
    await receiver.waitFor('/rebind');
    await waitForSetupLog(stack, job.id, /\/rebind .*delivered/);

    expect(resolverCalls.get(host)).toBe(1);
    expect(resolverOverrides.get(host)).toHaveLength(1);
  });

  it.each([
    ['metadata.kiln-test.invalid', '169.254.169.254 is a cloud metadata address'],
    ['ecs-metadata.kiln-test.invalid', '169.254.170.2 is a cloud metadata address'],
    ['metadata6.kiln-test.invalid', 'fd00:ec2::254 is a cloud metadata address'],
    ['link-local.kiln-test.invalid', 'fe80::1 is a link-local address'],
    ['mapped-metadata.kiln-test.invalid', '::ffff:169.254.169.254 is a cloud metadata address'],
    ['mixed.kiln-test.invalid', '169.254.169.254 is a cloud metadata address'],
  ])('rejects %s even when private addresses are allowed', async (host, reason) => {
    const route = `/never/${host}`;
    const job = await runJob({ hi: 'echo hi' }, [hook('always', route, `http://${host}:${receiver.port}`)]);
    const log = await waitForSetupLog(stack, job.id, /Webhook .* not sent: rejected/);

    expect(log).toContain(`Webhook http://${host}:${receiver.port}${route} (on always) not sent: rejected (${host} resolves to `);
    expect(log).toContain(`${reason}, which webhooks never reach`);
    expect(log).not.toMatch(/attempt/);
    expect(receiver.at(route)).toHaveLength(0);
  });

  it('rejects a metadata address written in the URL', async () => {
    const job = await runJob({ hi: 'echo hi' }, [hook('always', '/latest/meta-data/', 'http://169.254.169.254')]);
    const log = await waitForSetupLog(stack, job.id, /not sent: rejected/);

    expect(log).toContain('Webhook http://169.254.169.254/latest/meta-data/ (on always) not sent: rejected: 169.254.169.254 is a cloud metadata address');
  });

  it('sends nothing twice when the message is delivered again', async () => {
    const job = await runJob({ hi: 'echo hi' }, [hook('always', '/once'), { action: 'email', condition: 'always', to: 'once@example.org' }]);
    await receiver.waitFor('/once');
    await waitForSetupLog(stack, job.id, /Email to once@example\.org .*written to/);

    const body = JSON.stringify({ jobId: job.id });
    await Promise.all(
      [2, 3, 4].map((receiveCount) => consumeTriggerMessage(stack.context, stack.triggers.runtime, body, { receiveCount, maxReceives: 5 })),
    );
    await sleep(500);

    expect(receiver.at('/once')).toHaveLength(1);
    const log = await readSetupLog(stack, job.id);
    expect(log.match(/\/once .*delivered/g)).toHaveLength(1);
    expect(log.match(/Email to once@example\.org/g)).toHaveLength(1);
  });

  it('sends once when deliveries race', async () => {
    const submitted = await stack.submit({ manifest: manifestWithTriggers({ hi: 'echo hi' }, [hook('always', '/race')]) });
    const body = JSON.stringify({ jobId: submitted.id });
    await stack.waitForJob(submitted.id, isEnded, 30_000);
    const racing = [2, 3, 4].map((receiveCount) =>
      consumeTriggerMessage(stack.context, stack.triggers.runtime, body, { receiveCount, maxReceives: 5 }),
    );
    await Promise.allSettled(racing);
    await receiver.waitFor('/race');
    await sleep(1500);

    expect(receiver.at('/race')).toHaveLength(1);
  });

  it('runs group triggers once after every job has ended', async () => {
    const ids: number[] = [];
    for (const script of ['echo one', 'sleep 1', 'exit 1']) {
      const job = await stack.submit({ manifest: manifestWithTriggers({ step: script }, []), execute: false });
      ids.push(job.id);
    }
    const created = await stack.api('POST', '/api/job-group', {
      body: {
        jobs: ids,
        execute: true,
        note: 'three jobs',
        triggers: [hook('always', '/group/always'), hook('failure', '/group/failure'), hook('success', '/group/success')],
      },
    });
    expect(created.status).toBe(200);
    const groupId = ((await created.json()) as { id: number }).id;

    for (const id of ids) await stack.waitForJob(id, isEnded);
    const [request] = await receiver.waitFor('/group/always');
    await receiver.waitFor('/group/failure');
    await sleep(1500);

    expect(receiver.at('/group/always')).toHaveLength(1);
    expect(receiver.at('/group/failure')).toHaveLength(1);
    expect(receiver.at('/group/success')).toHaveLength(0);
    expect(hasValidSignature(request, publicKey)).toBe(true);
    const group = JSON.parse(request.body.toString()) as { id: number; note: string; jobs: JobView[]; triggers?: unknown };
    expect(group.id).toBe(groupId);
    expect(group.note).toBe('three jobs');
    expect(group.jobs.map((job) => [job.id, job.status])).toEqual([
      [ids[0], 'success'],
      [ids[1], 'success'],
      [ids[2], 'failed'],
    ]);
    expect(group.jobs[0].setup_log).toBe(`${stack.apiUrl}/api/jobs/${ids[0]}/log`);
    expect(group.triggers).toBeUndefined();
    const stored = await stack.context.stores.groups.find(groupId);
    expect(stored?.triggersRunAt).toEqual(expect.any(Number));
    for (const id of ids) {
      expect(await waitForSetupLog(stack, id, /Job group #\d+ webhook .*\/group\/always .*delivered/)).toContain(`Job group #${groupId} webhook`);
    }

    for (const id of ids) {
      await consumeTriggerMessage(stack.context, stack.triggers.runtime, JSON.stringify({ jobId: id }), { receiveCount: 2, maxReceives: 5 });
    }
    expect(receiver.at('/group/always')).toHaveLength(1);
  });
});

describe('webhook triggers with private addresses rejected', () => {
  let stack: TestStack;
  let receiver: WebhookReceiver;
  const resolverCalls = new Map<string, number>();

  beforeAll(async () => {
    receiver = await startWebhookReceiver();
    stack = await startTestStack({ KILN_WEBHOOK_ALLOW_PRIVATE: 'false' }, undefined, {
      triggers: { resolveHost: madeUpResolver(resolverCalls, new Map()), retryDelaysMs: [200, 400] },
    });
  });
  afterAll(async () => {
    await stack?.destroy();
    await receiver?.close();
  });

  it.each([
    ['a loopback literal', `http://127.0.0.1:PORT/private/literal`, '127.0.0.1 is a loopback address'],
    ['a name that resolves to loopback', `http://hooks.kiln-test.invalid:PORT/private/name`, '(hooks.kiln-test.invalid resolves to 127.0.0.1): 127.0.0.1 is a loopback address'],
    ['a name that resolves to a private address', `http://private.kiln-test.invalid:PORT/private/ten`, '10.20.30.40 is a private address'],
    ['an IPv4-mapped loopback literal', `http://[::ffff:127.0.0.1]:PORT/private/mapped`, 'is a loopback address'],
  ])('rejects %s and says why', async (_case, template, reason) => {
    const url = template.replace('PORT', String(receiver.port));
    const submitted = await stack.submit({ manifest: manifestWithTriggers({ hi: 'echo hi' }, [{ action: 'webhook', condition: 'always', url }]) });
    const job = await stack.waitForJob(submitted.id, isEnded);
    const log = await waitForSetupLog(stack, job.id, /not sent: rejected/);

    expect(log).toContain(reason);
    expect(log).toContain('which webhooks reach only when KILN_WEBHOOK_ALLOW_PRIVATE=true');
    expect(receiver.received).toHaveLength(0);
  });
});

describe('webhook key', () => {
  it('stays the same across a restart on the same data folder', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'kiln-key-'));
    try {
      const first = await startTestStack({}, dataDir);
      const before = await fetchPublicKey(first);
      await first.destroy();
      const second = await startTestStack({}, dataDir);
      const after = await fetchPublicKey(second);
      await second.destroy();

      expect(after.text).toBe(before.text);
      expect((await stat(path.join(dataDir, 'webhook-key'))).mode & 0o777).toBe(0o600);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
