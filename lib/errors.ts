/** One entry of build.sr.ht's error shape. `field` is left out when the error concerns no one field. */
export interface FieldError {
  field?: string;
  reason: string;
}

/** Base class of the errors that Kiln's domain code raises on purpose. */
export class KilnError extends Error {
  override name = 'KilnError';
}

/** Raised for input that breaks a rule. The API returns a 400 with the listed errors. */
export class ValidationError extends KilnError {
  override name = 'ValidationError';

  constructor(readonly errors: FieldError[]) {
    super(errors.map((error) => (error.field ? `${error.field}: ${error.reason}` : error.reason)).join('; '));
  }

  static of(field: string | undefined, reason: string): ValidationError {
    return new ValidationError([field === undefined ? { reason } : { field, reason }]);
  }
}

/** A job, token or other record that does not exist or that the caller may not see (404). */
export class NotFoundError extends KilnError {
  override name = 'NotFoundError';
}

/** A request that conflicts with the current state of a record, such as starting a running job (400). */
export class StateError extends KilnError {
  override name = 'StateError';
}

/** A missing, malformed, unknown, revoked or expired token (401). */
export class AuthenticationError extends KilnError {
  override name = 'AuthenticationError';
}

/** A valid token that lacks a scope or access to a record (403). */
export class ForbiddenError extends KilnError {
  override name = 'ForbiddenError';
}
