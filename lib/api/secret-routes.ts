import type { Hono } from 'hono';
import type { ServiceContext } from '../context.js';
import { ValidationError } from '../errors.js';
import { createSecret, loadOwnSecret, renderSecret, validateSecretRequest } from '../secrets/secrets.js';
import { DuplicateSecretNameError } from '../store/index.js';
import { readBody } from './body.js';
import type { ApiEnv } from './env.js';
import { requirePrincipal } from './guards.js';

/** Routes for a user's secrets. Values go in and never come out through the API. */
export function registerSecretRoutes(app: Hono<ApiEnv>, context: ServiceContext): void {
  app.post('/api/secrets', async (c) => {
    const principal = requirePrincipal(c, 'secrets:write');
    const request = validateSecretRequest(await readBody(c));
    try {
      return c.json(renderSecret(await createSecret(context, principal, request)), 200);
    } catch (error) {
      if (error instanceof DuplicateSecretNameError) throw ValidationError.of('name', `${error.message}; choose another name or delete that secret first`);
      throw error;
    }
  });

  app.get('/api/secrets', async (c) => {
    const principal = requirePrincipal(c, 'secrets:read');
    const secrets = await context.stores.secrets.listByOwner(principal.user);

    return c.json({ next: null, results: secrets.map(renderSecret), total: secrets.length, results_per_page: secrets.length });
  });

  app.delete('/api/secrets/:id', async (c) => {
    const principal = requirePrincipal(c, 'secrets:write');
    const secret = await loadOwnSecret(context, principal, c.req.param('id'));
    await context.stores.secrets.delete(secret);
    context.logger.info({ secretId: secret.id, owner: principal.user }, 'secret deleted');

    return c.json({});
  });
}
