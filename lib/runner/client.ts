import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import {
  RUNNER_PROTOCOL_VERSION,
  type ArtifactUploadedRequest,
  type ArtifactUrlRequest,
  type ArtifactUrlResponse,
  type ClaimRequest,
  type ClaimResponse,
  type CompleteRequest,
  type LogUrlRequest,
  type LogUrlResponse,
  type RunnerTaskStatus,
  type SecretsResponse,
  type TaskUpdateRequest,
} from './protocol.js';

/** A request to the service that failed for good: a 4xx, or network errors and 5xx past the retry window. */
export class RunnerApiError extends Error {
  override name = 'RunnerApiError';

  /** @param status The last HTTP status, or null when no response arrived. */
  constructor(
    message: string,
    readonly status: number | null,
  ) {
    super(message);
  }
}

/** A 409 from the service, because the job has already ended (cancelled, or timed out by the service). */
export class JobEndedError extends RunnerApiError {
  override name = 'JobEndedError';
}

export interface RunnerClientOptions {
  /** The service's base URL, such as `http://127.0.0.1:8080`. */
  baseUrl: string;
  logger: Logger;
  /** How long to keep retrying network errors, 429 and 5xx before giving up, in milliseconds. */
  retryWindowMs?: number;
  /** Time limit of one attempt, in milliseconds. */
  attemptTimeoutMs?: number;
}

const DEFAULT_RETRY_WINDOW_MS = 60_000;
const DEFAULT_ATTEMPT_TIMEOUT_MS = 30_000;
const FIRST_RETRY_DELAY_MS = 500;
const MAX_RETRY_DELAY_MS = 10_000;

/**
 * Client of the runner protocol. It sends JSON with `Authorization: token X`,
 * using the job token for the claim and the session token from the claim for
 * everything after it. The session token lives only in this object.
 */
export class RunnerClient {
  private readonly baseUrl: string;
  private readonly logger: Logger;
  private readonly retryWindowMs: number;
  private readonly attemptTimeoutMs: number;
  private sessionToken: string | null = null;
  private jobId: number | null = null;

  constructor(options: RunnerClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.logger = options.logger;
    this.retryWindowMs = options.retryWindowMs ?? DEFAULT_RETRY_WINDOW_MS;
    this.attemptTimeoutMs = options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;
  }

  /**
   * Claims the job with its one-time token and keeps the returned session
   * token for later requests. `runner` is the runner's name as its launcher
   * recorded it, such as the ECS task id.
   */
  async claim(jobToken: string, runner?: string): Promise<ClaimResponse> {
    const body: ClaimRequest = runner === undefined ? { protocol: RUNNER_PROTOCOL_VERSION } : { protocol: RUNNER_PROTOCOL_VERSION, runner };
    const response = await this.request<ClaimResponse>('/runner/v1/claim', body, jobToken);
    if (response.protocol !== RUNNER_PROTOCOL_VERSION) {
      throw new RunnerApiError(
        `the service speaks runner protocol ${response.protocol}, but this runner speaks ${RUNNER_PROTOCOL_VERSION}`,
        null,
      );
    }
    this.sessionToken = response.sessionToken;
    this.jobId = response.job.id;
    return response;
  }

  /** Requests a presigned PUT URL that replaces the whole object of one log. */
  logUrl(request: LogUrlRequest): Promise<LogUrlResponse> {
    return this.request<LogUrlResponse>(`${this.jobPath()}/log-url`, request, this.session());
  }

  async updateTask(task: string, status: RunnerTaskStatus): Promise<void> {
    const body: TaskUpdateRequest = { status };
    await this.request(`${this.jobPath()}/tasks/${encodeURIComponent(task)}`, body, this.session());
  }

  /**
   * Fetches the job's secrets. The service hands them out only until the
   * first task starts, so a retry after a lost response still gets them.
   */
  secrets(): Promise<SecretsResponse> {
    return this.request<SecretsResponse>(`${this.jobPath()}/secrets`, {}, this.session());
  }

  /**
   * Requests a presigned PUT URL for one artifact of `size` bytes. The
   * service rejects a second request for the same path with a 400, which a
   * retry after a lost response also gets.
   */
  artifactUrl(request: ArtifactUrlRequest): Promise<ArtifactUrlResponse> {
    return this.request<ArtifactUrlResponse>(`${this.jobPath()}/artifacts`, request, this.session());
  }

  /** Reports that an artifact's upload finished, so the service checks its size and lists it. */
  async artifactUploaded(request: ArtifactUploadedRequest): Promise<void> {
    await this.request(`${this.jobPath()}/artifacts/uploaded`, request, this.session());
  }

  async complete(request: CompleteRequest): Promise<void> {
    await this.request(`${this.jobPath()}/complete`, request, this.session());
  }

  private jobPath(): string {
    if (this.jobId === null) {
      throw new Error('the job has not been claimed yet');
    }
    return `/runner/v1/jobs/${this.jobId}`;
  }

  private session(): string {
    if (this.sessionToken === null) {
      throw new Error('the job has not been claimed yet');
    }
    return this.sessionToken;
  }

  /**
   * Sends one POST and returns its JSON body. Network errors, 429 and 5xx are
   * retried with exponential backoff until the retry window has passed. A 409
   * raises {@link JobEndedError} and any other status raises {@link RunnerApiError}
   * at once.
   */
  private async request<T>(path: string, body: unknown, token: string): Promise<T> {
    const started = Date.now();
    let delay = FIRST_RETRY_DELAY_MS;

    for (let attempt = 1; ; attempt += 1) {
      let failure: RunnerApiError;
      try {
        const response = await fetch(`${this.baseUrl}${path}`, {
          method: 'POST',
          headers: { authorization: `token ${token}`, 'content-type': 'application/json', accept: 'application/json' },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(this.attemptTimeoutMs),
        });
        const text = await response.text();
        if (response.ok) {
          return (text === '' ? {} : JSON.parse(text)) as T;
        }

        const message = `POST ${path} failed with HTTP ${response.status}: ${errorReasons(text)}`;
        if (response.status === 409) {
          throw new JobEndedError(message, response.status);
        }
        if (response.status !== 429 && response.status < 500) {
          throw new RunnerApiError(message, response.status);
        }
        failure = new RunnerApiError(message, response.status);
      } catch (error) {
        if (error instanceof RunnerApiError) {
          throw error;
        }
        if (error instanceof SyntaxError) {
          throw new RunnerApiError(`POST ${path} returned a body that is not JSON: ${error.message}`, null);
        }
        failure = new RunnerApiError(`POST ${path} failed: ${describeNetworkError(error)}`, null);
      }

      const elapsed = Date.now() - started;
      if (elapsed + delay > this.retryWindowMs) {
        this.logger.error({ path, attempt, err: failure.message }, 'giving up on a request to the service');
        throw failure;
      }
      this.logger.warn({ path, attempt, retryInMs: delay, err: failure.message }, 'request to the service failed, retrying');
      await sleep(delay);
      delay = Math.min(delay * 2, MAX_RETRY_DELAY_MS);
    }
  }
}

/** Returns the reasons of an API error body `{"errors": [{"reason": …}]}`, or the raw text cut to 200 characters. */
function errorReasons(text: string): string {
  try {
    const parsed = JSON.parse(text) as { errors?: Array<{ reason?: unknown }> };
    const reasons = (parsed.errors ?? []).map((entry) => String(entry.reason)).filter((reason) => reason !== '');
    if (reasons.length > 0) {
      return reasons.join('; ');
    }
  } catch {
    // The body is not JSON, so the raw text below describes the error.
  }
  return text.length > 200 ? `${text.slice(0, 200)}…` : text || '(empty body)';
}

/** Returns a fetch failure's message together with its cause, such as `fetch failed (connect ECONNREFUSED 127.0.0.1:9)`. */
export function describeNetworkError(error: unknown): string {
  if (!(error instanceof Error)) {
    return String(error);
  }
  const cause = error.cause instanceof Error ? ` (${error.cause.message})` : '';
  return `${error.message}${cause}`;
}
