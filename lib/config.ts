import { KilnError } from './errors.js';

/** A setting with a value that cannot be read; raised at start, before anything serves requests. */
export class SettingError extends KilnError {
  override name = 'SettingError';
}

/** Service settings read from `KILN_*` environment variables. */
export interface Settings {
  /** A job's deadline in ms, counted from the runner's claim. */
  jobTimeoutMs: number;
  /** Lifetime of presigned links in responses, in seconds. */
  logLinkTtlSeconds: number;
  /** Size cap of one log in bytes. */
  logMaxBytes: number;
  /** Builds running at once in the whole service. */
  maxRunning: number;
  /** Builds running at once per user. */
  maxRunningPerUser: number;
  /** Whether requests without a token may read public jobs. */
  anonymousRead: boolean;
  /** Whether webhooks may target loopback and private addresses. */
  webhookAllowPrivate: boolean;
  /** SMTP server for trigger email, such as `smtp://user:pass@host:587`; null writes .eml files locally. */
  smtpUrl: string | null;
  /** From address of trigger email, such as `Kiln <ci@example.org>`; null rejects email triggers. */
  emailFrom: string | null;
  /** RFC 7662 introspection endpoint that validates bearer tokens; null keeps bearer tokens in the table. */
  oauthIntrospectionUrl: string | null;
}

/** Defaults that differ between the local stack and AWS. */
export interface SettingDefaults {
  maxRunning: number;
  maxRunningPerUser: number;
  webhookAllowPrivate: boolean;
  emailFrom: string | null;
}

export const LOCAL_DEFAULTS: SettingDefaults = {
  maxRunning: 16,
  maxRunningPerUser: 4,
  webhookAllowPrivate: true,
  emailFrom: 'Kiln <kiln@localhost>',
};
/** On AWS the from address must be an identity verified in SES, so there is no default. */
export const AWS_DEFAULTS: SettingDefaults = { maxRunning: 100, maxRunningPerUser: 20, webhookAllowPrivate: false, emailFrom: null };

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
};

/**
 * Parses a duration such as `45m`, `1h`, `90s` or `1500ms`; a bare number is seconds.
 * Throws SettingError naming the setting when the value cannot be read.
 */
export function parseDuration(name: string, value: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(value);
  if (!match) {
    throw new SettingError(
      `${name}="${value}" is not a duration: write a number with a unit, such as 45m, 1h, 90s or 1500ms`,
    );
  }

  const milliseconds = Number(match[1]) * DURATION_UNITS_MS[(match[2] ?? 's').toLowerCase()];
  if (milliseconds <= 0) {
    throw new SettingError(`${name}="${value}" must be longer than zero`);
  }

  return Math.round(milliseconds);
}

/** Parses a size such as `64MiB`, `10 MB` or `1048576` (bytes). */
export function parseSize(name: string, value: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const unit = match?.[2].toLowerCase() ?? '';
  if (!match || !(unit in SIZE_UNITS)) {
    throw new SettingError(`${name}="${value}" is not a size: write bytes, or a number with KiB, MiB or GiB`);
  }

  const bytes = Math.floor(Number(match[1]) * SIZE_UNITS[unit]);
  if (bytes < 1024) {
    throw new SettingError(`${name}="${value}" is below the minimum of 1 KiB`);
  }

  return bytes;
}

/** Parses a whole number of at least 1. */
export function parseCount(name: string, value: string): number {
  if (!/^\s*\d+\s*$/.test(value) || Number(value) < 1) {
    throw new SettingError(`${name}="${value}" must be a whole number of at least 1`);
  }

  return Number(value);
}

/** Parses `true`/`false` (also `1`/`0`, `yes`/`no`). */
export function parseBoolean(name: string, value: string): boolean {
  const normalized = value.trim().toLowerCase();
  if (['true', '1', 'yes'].includes(normalized)) return true;
  if (['false', '0', 'no'].includes(normalized)) return false;

  throw new SettingError(`${name}="${value}" must be true or false`);
}

/** Parses one email address, bare (`ci@example.org`) or with a display name (`Kiln <ci@example.org>`). */
export function parseEmailAddress(name: string, value: string): string {
  const trimmed = value.trim();
  const address = /^[^\s@<>]+@[^\s@<>]+$/;
  const named = /^[^<>\u0000-\u001f\u007f]*<([^\s@<>]+@[^\s@<>]+)>$/;
  if (!address.test(trimmed) && !named.test(trimmed)) {
    throw new SettingError(`${name}="${value}" is not an email address: write it as ci@example.org or as Kiln <ci@example.org>`);
  }

  return trimmed;
}

/** Parses an absolute URL with one of the given protocols, such as `https:`. */
export function parseUrl(protocols: readonly string[]) {
  return (name: string, value: string): string => {
    let url: URL;
    try {
      url = new URL(value.trim());
    } catch {
      throw new SettingError(`${name}="${value}" is not a URL: write it in full, such as ${protocols[0]}//host:port/path`);
    }
    if (!protocols.includes(url.protocol)) {
      throw new SettingError(`${name}="${value}" must use ${protocols.join(' or ')}, not ${url.protocol}`);
    }

    return url.toString();
  };
}

function readSetting<T>(
  env: NodeJS.ProcessEnv,
  name: string,
  parse: (name: string, value: string) => T,
  fallback: T,
): T {
  const value = env[name];
  if (value === undefined || value.trim() === '') return fallback;

  return parse(name, value);
}

/** Reads every setting from `env`, filling in `defaults`. Throws SettingError on the first bad value. */
export function readSettings(env: NodeJS.ProcessEnv, defaults: SettingDefaults): Settings {
  return {
    jobTimeoutMs: readSetting(env, 'KILN_JOB_TIMEOUT', parseDuration, 45 * 60_000),
    logLinkTtlSeconds: Math.ceil(readSetting(env, 'KILN_LOG_LINK_TTL', parseDuration, 3_600_000) / 1000),
    logMaxBytes: readSetting(env, 'KILN_LOG_MAX_BYTES', parseSize, 64 * 1024 ** 2),
    maxRunning: readSetting(env, 'KILN_MAX_RUNNING', parseCount, defaults.maxRunning),
    maxRunningPerUser: readSetting(env, 'KILN_MAX_RUNNING_PER_USER', parseCount, defaults.maxRunningPerUser),
    anonymousRead: readSetting(env, 'KILN_ANONYMOUS_READ', parseBoolean, false),
    webhookAllowPrivate: readSetting(env, 'KILN_WEBHOOK_ALLOW_PRIVATE', parseBoolean, defaults.webhookAllowPrivate),
    smtpUrl: readSetting<string | null>(env, 'KILN_SMTP_URL', parseUrl(['smtp:', 'smtps:']), null),
    emailFrom: readSetting<string | null>(env, 'KILN_EMAIL_FROM', parseEmailAddress, defaults.emailFrom),
    oauthIntrospectionUrl: readSetting<string | null>(env, 'KILN_OAUTH_INTROSPECTION_URL', parseUrl(['https:', 'http:']), null),
  };
}
