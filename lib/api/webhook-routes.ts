import type { Hono } from 'hono';
import type { ServiceContext } from '../context.js';
import type { ApiEnv } from './env.js';
import { errorResponse } from './errors.js';

/**
 * Serves the public half of the webhook signing key without a token, as
 * base64 of the raw 32-byte Ed25519 key in plain text, so that receivers can
 * check `X-Payload-Signature`.
 */
export function registerWebhookRoutes(app: Hono<ApiEnv>, context: ServiceContext): void {
  app.get('/api/webhooks/public-key', async (c) => {
    if (context.webhookKey === undefined) {
      return errorResponse(c, 503, 'This deployment has no webhook signing key, so it sends no webhooks');
    }
    const { publicKeyBase64 } = await context.webhookKey.keyPair();

    return c.text(publicKeyBase64, 200, { 'content-type': 'text/plain; charset=utf-8' });
  });
}
