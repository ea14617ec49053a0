import type { Context } from 'hono';
import { ValidationError } from '../errors.js';

/** Largest request body the API reads; larger ones get a 413 before parsing. */
export const MAX_BODY_BYTES = 1024 * 1024;

/**
 * Reads a request body as an object, from JSON (with or without a charset
 * parameter) or from a form-encoded body, where every value is a string and a
 * repeated key becomes a list. An empty body is an empty object.
 */
export async function readBody(c: Context): Promise<Record<string, unknown>> {
  const contentType = (c.req.header('content-type') ?? '').split(';')[0].trim().toLowerCase();
  const text = await c.req.text();
  if (text.trim() === '') return {};

  if (contentType === 'application/x-www-form-urlencoded') return readForm(text);

  if (contentType !== '' && contentType !== 'application/json' && !contentType.endsWith('+json')) {
    throw ValidationError.of(
      undefined,
      `Unsupported content type "${contentType}": send application/json or application/x-www-form-urlencoded`,
    );
  }

  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw ValidationError.of(undefined, `The request body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw ValidationError.of(undefined, 'The request body must be a JSON object');
  }

  return value as Record<string, unknown>;
}

function readForm(text: string): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const [key, value] of new URLSearchParams(text)) {
    const existing = body[key];
    if (existing === undefined) body[key] = value;
    else body[key] = Array.isArray(existing) ? [...existing, value] : [existing, value];
  }

  return body;
}
