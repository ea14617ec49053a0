import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { TokenIntrospector } from '../auth/introspection.js';
import { authenticateToken, readPresentedToken, type Principal } from '../auth/tokens.js';
import type { ServiceContext } from '../context.js';
import { MAX_BODY_BYTES } from './body.js';
import type { ApiEnv } from './env.js';
import { errorResponse, handleError } from './errors.js';
import { registerGroupRoutes } from './group-routes.js';
import { registerJobRoutes } from './job-routes.js';
import { registerRunnerRoutes } from './runner-routes.js';
import { registerSecretRoutes } from './secret-routes.js';
import { registerWebhookRoutes } from './webhook-routes.js';

/** Builds the HTTP app that serves build.sr.ht's REST API and the runner protocol, on Lambda and locally. */
export function createApp(context: ServiceContext): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();

  app.onError((error, c) => handleError(error, c, context.logger));
  app.notFound((c) => {
    const allowed = allowedMethods(app, c.req.path);
    if (allowed.length === 0) return errorResponse(c, 404, `No route for ${c.req.method} ${c.req.path}`);

    c.header('allow', allowed.join(', '));
    return errorResponse(c, 405, `${c.req.method} is not allowed on ${c.req.path}; use ${allowed.join(' or ')}`);
  });
  app.use(
    '*',
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: (c) => {
        // The rest of the body is never read, so the connection cannot carry another request.
        c.header('connection', 'close');
        return errorResponse(c, 413, `The request body is larger than the limit of ${MAX_BODY_BYTES} bytes`);
      },
    }),
  );
  const introspector = context.settings.oauthIntrospectionUrl
    ? new TokenIntrospector(context.settings.oauthIntrospectionUrl, context.logger)
    : null;
  app.use('/api/*', async (c, next) => {
    const presented = readPresentedToken(c.req.header('authorization'));
    let principal: Principal | null = null;
    if (presented?.scheme === 'bearer' && introspector) principal = await introspector.introspect(presented.token);
    else if (presented) principal = await authenticateToken(context.stores.tokens, presented.token);
    c.set('principal', principal);
    await next();
  });

  registerJobRoutes(app, context);
  registerGroupRoutes(app, context);
  registerSecretRoutes(app, context);
  registerRunnerRoutes(app, context);
  registerWebhookRoutes(app, context);

  return app;
}

/** Lists the methods that the app's routes serve on `path`, for a 405's Allow header. */
function allowedMethods(app: Hono<ApiEnv>, path: string): string[] {
  const methods = new Set<string>();
  for (const route of app.routes) {
    if (route.method === 'ALL' || route.path.includes('*')) continue;

    const pattern = new RegExp(`^${route.path.replace(/:[^/]+/g, '[^/]+')}$`);
    if (pattern.test(path)) methods.add(route.method);
  }

  return [...methods].sort();
}
