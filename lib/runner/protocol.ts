/**
 * The HTTP protocol between a runner and the service. The runner holds no AWS
 * credentials: it claims its job with a one-time job token, receives a session
 * token, and from then on reports task states and asks for presigned S3 URLs.
 *
 * Routes, all under the service's base URL and all JSON:
 *
 * - `POST /runner/v1/claim`, `Authorization: token <job token>`,
 *   body {@link ClaimRequest}, returns {@link ClaimResponse}. The job moves
 *   to `running`; the job token stops working.
 * - `POST /runner/v1/jobs/:id/log-url`, `Authorization: token <session token>`,
 *   body {@link LogUrlRequest}, returns {@link LogUrlResponse}: a presigned PUT
 *   URL that replaces the whole log object.
 * - `POST /runner/v1/jobs/:id/tasks/:name`, body {@link TaskUpdateRequest},
 *   returns `{}`. Task states move forward only.
 * - `POST /runner/v1/jobs/:id/complete`, body {@link CompleteRequest}, returns
 *   `{}`. Every token of the job stops working.
 *
 * Errors use the API's shape `{"errors": [{"reason": "..."}]}`. A 409 means the
 * job has already ended (cancelled, timed out by the service): the runner
 * stops its work, uploads its logs a last time if it still can, and exits.
 */
export const RUNNER_PROTOCOL_VERSION = 1;

export interface ClaimRequest {
  protocol: number;
  /**
   * The runner's own name as its launcher recorded it (the ECS task id on
   * AWS). When the job has a recorded runner, a claim naming another is rejected.
   */
  runner?: string;
}

export type EnvironmentValue = string | number | boolean | null | Array<string | number | boolean | null>;

export interface ClaimedTask {
  name: string;
  script: string;
}

export interface ClaimedJob {
  id: number;
  /** The job's page in the API, exported to builds as JOB_URL. */
  url: string;
  image: string;
  arch: string;
  packages: string[];
  repositories: Record<string, string>;
  sources: string[];
  environment: Record<string, EnvironmentValue>;
  shell: boolean;
  artifacts: string[];
  tasks: ClaimedTask[];
  /** When the job times out, as an ISO 8601 timestamp. */
  deadline: string;
  /** Size cap of one log in bytes. */
  logMaxBytes: number;
}

export interface ClaimResponse {
  protocol: number;
  sessionToken: string;
  job: ClaimedJob;
}

export type LogUrlRequest = { log: 'setup' } | { log: 'task'; task: string };

export interface LogUrlResponse {
  url: string;
  /** Headers that the PUT must send, because they are part of the signature. */
  headers: Record<string, string>;
  /** When the URL stops working, as an ISO 8601 timestamp. */
  expiresAt: string;
}

export type RunnerTaskStatus = 'running' | 'success' | 'failed' | 'skipped';

export interface TaskUpdateRequest {
  status: RunnerTaskStatus;
}

export type RunnerJobStatus = 'success' | 'failed' | 'timeout';

export interface CompleteRequest {
  status: RunnerJobStatus;
  /** Why the job failed, for the service's own log lines; the setup log already says it. */
  reason?: string;
}
