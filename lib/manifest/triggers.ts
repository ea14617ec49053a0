import { type FieldError, ValidationError } from '../errors.js';
import type { Trigger, TriggerCondition } from './types.js';

const ACTIONS = ['email', 'webhook'] as const;
const CONDITIONS: readonly TriggerCondition[] = ['success', 'failure', 'always'];

/** Control characters, CR and LF included, which would let an address inject mail headers. */
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/**
 * Validates triggers from a manifest or a job request body. Null and undefined
 * mean no triggers.
 *
 * @param field The name of the value in error fields, such as `triggers`.
 * @throws ValidationError listing every problem, on fields such as `triggers[0].condition`.
 */
export function validateTriggers(value: unknown, field: string): Trigger[] {
  const errors: FieldError[] = [];
  const triggers = collectTriggers(value, field, errors);
  if (errors.length > 0) throw new ValidationError(errors);
  return triggers;
}

/** Validates triggers like {@link validateTriggers}, appending problems to `errors` instead of throwing. */
export function collectTriggers(value: unknown, field: string, errors: FieldError[]): Trigger[] {
  if (value === null || value === undefined) return [];
  if (!Array.isArray(value)) {
    errors.push({ field, reason: `Expected a list of triggers, got ${describeValue(value)}. Write each trigger as a list item with action and condition.` });
    return [];
  }

  const triggers: Trigger[] = [];
  value.forEach((item: unknown, index) => {
    const trigger = checkTrigger(item, `${field}[${index}]`, errors);
    if (trigger !== null) triggers.push(trigger);
  });
  return triggers;
}

function checkTrigger(item: unknown, field: string, errors: FieldError[]): Trigger | null {
  if (!isRecord(item)) {
    errors.push({ field, reason: `Expected a trigger mapping with action and condition, got ${describeValue(item)}.` });
    return null;
  }
  const errorCount = errors.length;

  const action = item.action;
  if (!ACTIONS.includes(action as (typeof ACTIONS)[number])) {
    const problem = action === undefined || action === null ? 'is missing' : `is ${describeValue(action)}`;
    errors.push({ field: `${field}.action`, reason: `The trigger action ${problem}. Use one of: ${ACTIONS.join(', ')}.` });
  }

  const condition = item.condition;
  if (!CONDITIONS.includes(condition as TriggerCondition)) {
    const problem = condition === undefined || condition === null ? 'is missing' : `is ${describeValue(condition)}`;
    errors.push({ field: `${field}.condition`, reason: `The trigger condition ${problem}. Use one of: ${CONDITIONS.join(', ')}.` });
  }

  if (action === 'email') {
    const to = checkText(item.to, `${field}.to`, 'recipient address', true, errors);
    const cc = checkText(item.cc, `${field}.cc`, 'copy address', false, errors);
    const inReplyTo = checkText(item.in_reply_to, `${field}.in_reply_to`, 'Message-ID to reply to', false, errors);
    if (errors.length > errorCount || to === undefined) return null;
    const trigger: Trigger = { action: 'email', condition: condition as TriggerCondition, to };
    if (cc !== undefined) trigger.cc = cc;
    if (inReplyTo !== undefined) trigger.in_reply_to = inReplyTo;
    return trigger;
  }

  if (action === 'webhook') {
    const url = checkWebhookUrl(item.url, `${field}.url`, errors);
    if (errors.length > errorCount || url === undefined) return null;
    return { action: 'webhook', condition: condition as TriggerCondition, url };
  }
  return null;
}

function checkText(value: unknown, field: string, what: string, required: boolean, errors: FieldError[]): string | undefined {
  if (value === undefined || value === null) {
    if (required) errors.push({ field, reason: `The ${what} is missing. An email trigger needs "to".` });
    return undefined;
  }
  if (typeof value !== 'string' || value.trim() === '') {
    errors.push({ field, reason: `Expected the ${what} as a non-empty string, got ${describeValue(value)}.` });
    return undefined;
  }
  if (CONTROL_CHARACTER.test(value)) {
    errors.push({ field, reason: `The ${what} ${describeValue(value)} contains a line break or another control character. Remove it.` });
    return undefined;
  }
  return value;
}

function checkWebhookUrl(value: unknown, field: string, errors: FieldError[]): string | undefined {
  if (value === undefined || value === null) {
    errors.push({ field, reason: 'The webhook URL is missing. A webhook trigger needs "url", an http or https URL.' });
    return undefined;
  }
  if (typeof value !== 'string') {
    errors.push({ field, reason: `Expected the webhook URL as a string, got ${describeValue(value)}.` });
    return undefined;
  }
  let url: URL | null = null;
  try {
    url = new URL(value);
  } catch {
    url = null;
  }
  // NOTE: any host passes here, private and link-local addresses included. The
  // sender must reject those after resolving the host name.
  if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '' || /\s/.test(value)) {
    errors.push({ field, reason: `The webhook URL ${describeValue(value)} is not a valid http or https URL. Write it as https://host/path.` });
    return undefined;
  }
  return value;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

/** Describes a plain value for an error message, with strings quoted and cut to 80 characters. */
export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'an empty value';
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
  if (typeof value === 'number' || typeof value === 'bigint') return `the number ${String(value)}`;
  if (typeof value === 'boolean') return `the boolean ${String(value)}`;
  if (value instanceof Date) return `the date ${value.toISOString()}`;
  if (Array.isArray(value)) return 'a list';
  return 'a mapping';
}
