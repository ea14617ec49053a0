import type { Context } from 'hono';
import type { Principal } from '../auth/tokens.js';

/** Hono's context variables of the API: the caller, or null for a request without a token. */
export type ApiEnv = { Variables: { principal: Principal | null } };

export type ApiContext = Context<ApiEnv>;
