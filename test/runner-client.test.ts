import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { JobEndedError, RunnerApiError, RunnerClient } from '../lib/runner/client.js';
import { RUNNER_PROTOCOL_VERSION } from '../lib/runner/protocol.js';

const silent = pino({ level: 'silent' });

interface ReceivedRequest {
  path: string;
  authorization: string | undefined;
  body: unknown;
}

describe('RunnerClient', () => {
  let server: http.Server;
  let baseUrl: string;
  let received: ReceivedRequest[];
  /** Responses for the next requests; once empty, every request gets 200 `{}`. */
  let planned: Array<{ status: number; body: unknown }>;

  beforeAll(async () => {
    server = http.createServer((request, response) => {
      let text = '';
      request.setEncoding('utf8');
      request.on('data', (chunk: string) => {
        text += chunk;
      });
      request.on('end', () => {
        received.push({ path: request.url ?? '', authorization: request.headers.authorization, body: JSON.parse(text) });
        const next = planned.shift() ?? { status: 200, body: {} };
        response.writeHead(next.status, { 'content-type': 'application/json' }).end(JSON.stringify(next.body));
      });
    });
    server.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  beforeEach(() => {
    received = [];
    planned = [];
  });

  const claimResponse = {
    status: 200,
    body: { protocol: RUNNER_PROTOCOL_VERSION, sessionToken: 'session-1', job: { id: 9 } },
  };

  it('claims with the job token and then uses the session token', async () => {
    const client = new RunnerClient({ baseUrl, logger: silent });
    planned = [claimResponse];

    await client.claim('job-token');
    await client.updateTask('build docs', 'running');
    await client.complete({ status: 'success' });

    expect(received).toEqual([
      { path: '/runner/v1/claim', authorization: 'token job-token', body: { protocol: RUNNER_PROTOCOL_VERSION } },
      { path: '/runner/v1/jobs/9/tasks/build%20docs', authorization: 'token session-1', body: { status: 'running' } },
      { path: '/runner/v1/jobs/9/complete', authorization: 'token session-1', body: { status: 'success' } },
    ]);
  });

  it('sends the runner name with the claim', async () => {
    const client = new RunnerClient({ baseUrl, logger: silent });
    planned = [claimResponse];

    await client.claim('job-token', 'task-abc');

    expect(received[0].body).toEqual({ protocol: RUNNER_PROTOCOL_VERSION, runner: 'task-abc' });
  });

  it('retries 5xx until a request succeeds', async () => {
    const client = new RunnerClient({ baseUrl, logger: silent });
    planned = [claimResponse, { status: 503, body: {} }, { status: 502, body: {} }];
    await client.claim('job-token');

    await client.updateTask('build', 'running');

    // The claim, two failed attempts and the one that succeeded.
    expect(received.map((request) => request.path)).toEqual([
      '/runner/v1/claim',
      '/runner/v1/jobs/9/tasks/build',
      '/runner/v1/jobs/9/tasks/build',
      '/runner/v1/jobs/9/tasks/build',
    ]);
  });

  it('raises JobEndedError on 409 without retrying', async () => {
    const client = new RunnerClient({ baseUrl, logger: silent });
    planned = [claimResponse, { status: 409, body: { errors: [{ reason: 'Job 9 has ended (cancelled)' }] } }];
    await client.claim('job-token');

    const failure = client.updateTask('build', 'running');

    await expect(failure).rejects.toBeInstanceOf(JobEndedError);
    await expect(failure).rejects.toThrow('Job 9 has ended (cancelled)');
    expect(received.length).toBe(2);
  });

  it('raises other 4xx at once with the reasons', async () => {
    const client = new RunnerClient({ baseUrl, logger: silent });
    planned = [{ status: 401, body: { errors: [{ reason: 'Invalid job token' }] } }];

    const failure = client.claim('wrong');

    await expect(failure).rejects.toBeInstanceOf(RunnerApiError);
    await expect(failure).rejects.toThrow('POST /runner/v1/claim failed with HTTP 401: Invalid job token');
    expect(received.length).toBe(1);
  });

  it('gives up on 5xx after the retry window', async () => {
    const client = new RunnerClient({ baseUrl, logger: silent, retryWindowMs: 1_000 });
    planned = Array.from({ length: 20 }, () => ({ status: 500, body: {} }));

    await expect(client.claim('job-token')).rejects.toThrow('HTTP 500');
    expect(received.length).toBeGreaterThan(1);
  });

  it('gives up on network errors after the retry window', async () => {
    const closed = http.createServer();
    closed.listen(0, '127.0.0.1');
    await new Promise((resolve) => closed.once('listening', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const client = new RunnerClient({ baseUrl: `http://127.0.0.1:${port}`, logger: silent, retryWindowMs: 1_000 });

    const failure = client.claim('job-token');

    await expect(failure).rejects.toBeInstanceOf(RunnerApiError);
    await expect(failure).rejects.toThrow('ECONNREFUSED');
  });

  it('rejects a claim in another protocol version', async () => {
    const client = new RunnerClient({ baseUrl, logger: silent });
    planned = [{ status: 200, body: { ...claimResponse.body, protocol: RUNNER_PROTOCOL_VERSION + 1 } }];

    await expect(client.claim('job-token')).rejects.toThrow(`runner protocol ${RUNNER_PROTOCOL_VERSION + 1}`);
  });
});
