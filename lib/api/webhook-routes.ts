import type { Hono } from 'hono';
import type { ServiceContext } from '../context.js';
import { WebhookKeyError } from '../triggers/webhook-key.js';
import type { ApiEnv } from './env.js';
import { errorResponse } from './errors.js';

/**
 * Serves the public half of the webhook signing key without a token, as
 * base64 of the raw 32-byte Ed25519 key in plain text, so that receivers can
 * check `X-Payload-Signature`. When the key cannot be loaded, the route
 * returns 503 and logs the reason, which may name the key's secret or file.
 */
export function registerWebhookRoutes(app: Hono<ApiEnv>, context: ServiceContext): void {
  app.get('/api/webhooks/public-key', async (c) => {
    let publicKeyBase64: string;
    try {
      ({ publicKeyBase64 } = await context.webhookKey.keyPair());
    } catch (error) {
      if (!(error instanceof WebhookKeyError)) throw error;

      context.logger.error({ err: error }, 'failed to load the webhook signing key');
      return errorResponse(c, 503, 'The webhook signing key could not be loaded; try again later');
    }

    return c.text(publicKeyBase64, 200, { 'content-type': 'text/plain; charset=utf-8' });
  });
}
