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

/**
 * `POST /runner/v1/jobs/:id/artifacts`: asks for a presigned PUT URL for one
 * artifact, after every task succeeded. The size is part of the signature, so
 * the upload must send exactly `size` bytes. An artifact is never overwritten:
 * asking twice for one name is a 400.
 */
export interface ArtifactUrlRequest {
  /** The path as the manifest lists it. */
  path: string;
  /** Size of the file in bytes; at most {@link MAX_ARTIFACT_BYTES}. */
  size: number;
}

export interface ArtifactUrlResponse {
  url: string;
  headers: Record<string, string>;
  expiresAt: string;
}

/**
 * `POST /runner/v1/jobs/:id/artifacts/uploaded`: reports that an artifact's
 * upload finished; the service checks the object's size and lists the artifact.
 * Returns `{}`.
 */
export interface ArtifactUploadedRequest {
  path: string;
}

export const MAX_ARTIFACT_BYTES = 1024 ** 3;

export type SecretType = 'ssh_key' | 'pgp_key' | 'plaintext_file';

/** One secret as the runner receives it. */
export interface RunnerSecret {
  id: string;
  name: string;
  type: SecretType;
  /** The secret's bytes, base64 encoded. */
  value: string;
  /** For `plaintext_file`: where to write it; `~/` means the build user's home. */
  path?: string;
  /** For `plaintext_file`: the file mode, such as 0o600. */
  mode?: number;
}

/**
 * `POST /runner/v1/jobs/:id/secrets`: returns the owner's secrets that the
 * manifest names, once per job and before sources are cloned; a second call is
 * a 409. Empty when the job was submitted with `secrets: false`.
 */
export interface SecretsResponse {
  secrets: RunnerSecret[];
}
