import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import {
  AuthenticationError,
  ForbiddenError,
  NotFoundError,
  StateError,
  ValidationError,
  type FieldError,
} from '../errors.js';
import { JobEndedError } from '../jobs/runner-session.js';
import type { Logger } from '../logger.js';
import { ConcurrencyError } from '../store/index.js';

export function errorBody(errors: FieldError[]): { errors: FieldError[] } {
  return { errors };
}

export function errorResponse(c: Context, status: ContentfulStatusCode, reason: string, field?: string): Response {
  return c.json(errorBody([field === undefined ? { reason } : { field, reason }]), status);
}

/**
 * Maps domain errors to build.sr.ht's error shape and status codes. Anything
 * unexpected becomes a bare 500 whose details only the log shows.
 */
export function handleError(error: Error, c: Context, logger: Logger): Response {
  if (error instanceof ValidationError) return c.json(errorBody(error.errors), 400);
  if (error instanceof StateError) return errorResponse(c, 400, error.message);
  if (error instanceof AuthenticationError) return errorResponse(c, 401, error.message);
  if (error instanceof ForbiddenError) return errorResponse(c, 403, error.message);
  if (error instanceof NotFoundError) return errorResponse(c, 404, error.message);
  if (error instanceof JobEndedError) return errorResponse(c, 409, error.message);
  if (error instanceof ConcurrencyError) return errorResponse(c, 503, error.message);

  logger.error({ err: error, method: c.req.method, path: c.req.path }, 'request failed');

  return errorResponse(c, 500, 'Internal server error');
}
