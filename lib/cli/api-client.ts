import type { JobView } from '../api/job-view.js';

/** An error response of the API, with build.sr.ht's error list. */
export class ApiError extends Error {
  override name = 'ApiError';

  constructor(
    readonly status: number,
    readonly reasons: string[],
  ) {
    super(`HTTP ${status}: ${reasons.join('; ')}`);
  }
}

/** A small client of Kiln's REST API, for the CLI. */
export class ApiClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
  ) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: { authorization: `token ${this.token}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new Error(`failed to reach Kiln at ${this.baseUrl}: ${(error as Error).message}; is it running?`, { cause: error });
    }

    const text = await response.text();
    if (!response.ok) throw new ApiError(response.status, readReasons(text));

    return JSON.parse(text) as T;
  }

  getJob(id: number): Promise<JobView> {
    return this.request<JobView>('GET', `/api/jobs/${id}`);
  }
}

function readReasons(text: string): string[] {
  try {
    const body = JSON.parse(text) as { errors?: Array<{ field?: string; reason: string }> };
    if (Array.isArray(body.errors)) {
      return body.errors.map((error) => (error.field ? `${error.field}: ${error.reason}` : error.reason));
    }
  } catch {
    // Falls through to the raw text.
  }

  return [text.slice(0, 500)];
}
