import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * The service's one logger: JSON lines on stderr. Child loggers add `jobId`
 * or `requestId`. Tokens and presigned URLs must never be passed to it.
 */
export const logger: Logger = pino({
  base: { service: 'kiln' },
  level: process.env.KILN_LOG_LEVEL ?? 'info',
  redact: { paths: ['token', 'sessionToken', 'jobToken', 'authorization', '*.authorization'], censor: '[redacted]' },
}, pino.destination(2));
