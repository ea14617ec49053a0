/**
 * Lambda entry point of the HTTP API: the same Hono app that the local stack
 * serves, behind API Gateway's HTTP API (payload format 2.0).
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyResultV2, Context } from 'aws-lambda';
import { handle } from 'hono/aws-lambda';
import { createApp } from '../lib/api/app.js';
import { awsRuntime, normalizePublicUrl } from '../lib/aws-context.js';

type LambdaHandler = (event: APIGatewayProxyEventV2, lambdaContext: Context) => Promise<APIGatewayProxyResultV2>;

const handlers = new Map<string, LambdaHandler>();

/**
 * Returns the API's public base URL: KILN_PUBLIC_URL when the deployment
 * sets one (a custom domain), else the domain that API Gateway received the
 * request on. API Gateway sets that domain itself, so a client's Host header
 * cannot change it.
 */
export function publicUrlOf(event: APIGatewayProxyEventV2, env: NodeJS.ProcessEnv = process.env): string {
  const configured = env.KILN_PUBLIC_URL?.trim();
  if (configured) return normalizePublicUrl(configured);

  return `https://${event.requestContext.domainName}`;
}

export async function handler(event: APIGatewayProxyEventV2, lambdaContext: Context): Promise<APIGatewayProxyResultV2> {
  const url = publicUrlOf(event);
  let serve = handlers.get(url);
  if (serve === undefined) {
    serve = handle(createApp(awsRuntime(url).context)) as LambdaHandler;
    handlers.set(url, serve);
  }

  return serve(event, lambdaContext);
}
