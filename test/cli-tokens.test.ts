import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createToken, hashToken } from '../lib/auth/tokens.js';
import { runCli } from '../lib/cli/main.js';
import { startTestStack, type TestStack, recordServerErrors, type ErrorBody } from './support/local-stack.js';

/** One line of `kiln token list`: id, state, creation, expiry and scopes. */
interface ListedToken {
  id: string;
  state: string;
  created: string;
  expires: string;
  scopes: string;
}

const LIST_LINE = /^(\S+) {2}(active|revoked|expired) *  created (\S+) {2}expires (\S+) {2}(\S+)$/;

describe('kiln token list and revoke', () => {
  let stack: TestStack;
  let serverErrors: string[];
  let env: NodeJS.ProcessEnv;

  /** Runs the CLI in this process against the test stack's dynalite; returns the exit code and the output. */
  async function kiln(...argv: string[]): Promise<{ code: number; output: string }> {
    let output = '';
    const code = await runCli(argv, (text) => (output += text), env);

    return { code, output };
  }

  async function list(user: string): Promise<ListedToken[]> {
    const { code, output } = await kiln('token', 'list', '--user', user);
    expect(code).toBe(0);

    return output
      .trimEnd()
      .split('\n')
      .map((line) => {
        const match = LIST_LINE.exec(line);
        if (!match) throw new Error(`unexpected line of token list: ${JSON.stringify(line)}`);
        const [, id, state, created, expires, scopes] = match;
        return { id, state, created, expires, scopes };
      });
  }

  async function statusWith(token: string): Promise<{ status: number; reason: string | null }> {
    const response = await stack.api('GET', '/api/jobs', { token });
    const reason = response.status === 200 ? null : ((await response.json()) as ErrorBody).errors[0].reason;

    return { status: response.status, reason };
  }

  beforeAll(async () => {
    stack = await startTestStack();
    serverErrors = recordServerErrors(stack);
    env = { KILN_DYNAMODB_PORT: new URL(stack.dynamodbEndpoint).port };
  });
  afterEach(() => {
    expect(serverErrors.splice(0)).toEqual([]);
  });
  afterAll(async () => {
    await stack?.destroy();
  });

  it('creates a token that the API accepts', async () => {
    const { code, output } = await kiln('token', 'create', '--user', 'cli_maker', '--scopes', 'jobs:read,jobs:write');
    const token = output.trim();

    expect(code).toBe(0);
    expect(token).toMatch(/^kiln_\S+$/);
    expect((await statusWith(token)).status).toBe(200);
  });

  it('lists a user tokens oldest first with state, dates and scopes', async () => {
    const store = stack.context.stores.tokens;
    const first = await createToken(store, { user: 'cli_lister', scopes: ['jobs:read'] });
    const second = await createToken(store, { user: 'cli_lister', scopes: ['jobs:read', 'jobs:write'], expiresAt: Date.now() + 86_400_000 });
    const expiredAt = Date.now() - 60_000;
    const third = await createToken(store, { user: 'cli_lister', scopes: ['jobs:write'], expiresAt: expiredAt });
    await createToken(store, { user: 'cli_other', scopes: ['jobs:read'] });

    const tokens = await list('cli_lister');

    expect(tokens.map((token) => token.id)).toEqual([first.record.id, second.record.id, third.record.id]);
    expect(tokens.map((token) => token.state)).toEqual(['active', 'active', 'expired']);
    expect(tokens.map((token) => token.scopes)).toEqual(['jobs:read', 'jobs:read,jobs:write', 'jobs:write']);
    expect(tokens[0].expires).toBe('never');
    expect(tokens[1].expires).toBe(new Date(second.record.expiresAt!).toISOString());
    expect(tokens[2].expires).toBe(new Date(expiredAt).toISOString());
    expect(tokens[0].created).toBe(new Date(first.record.createdAt).toISOString());
  });

  it('never prints a token or its hash', async () => {
    const { token, record } = await createToken(stack.context.stores.tokens, { user: 'cli_secret', scopes: ['jobs:read'] });
    const { output } = await kiln('token', 'list', '--user', 'cli_secret');

    expect(output).toContain(record.id);
    expect(output).not.toContain(token);
    expect(output).not.toContain(hashToken(token));
  });

  it('accepts the user name with a leading ~', async () => {
    const { record } = await createToken(stack.context.stores.tokens, { user: 'cli_tilde', scopes: ['jobs:read'] });

    expect((await list('~cli_tilde')).map((token) => token.id)).toEqual([record.id]);
  });

  it('says when a user has no tokens', async () => {
    const { code, output } = await kiln('token', 'list', '--user', 'cli_nobody');

    expect(code).toBe(0);
    expect(output).toBe('No tokens for cli_nobody\n');
  });

  it('revokes a token so that the API answers 401 saying it was revoked', async () => {
    const store = stack.context.stores.tokens;
    const doomed = await createToken(store, { user: 'cli_revoker', scopes: ['jobs:read'] });
    const kept = await createToken(store, { user: 'cli_revoker', scopes: ['jobs:read'] });
    expect((await statusWith(doomed.token)).status).toBe(200);

    const { code, output } = await kiln('token', 'revoke', doomed.record.id);

    expect(code).toBe(0);
    expect(output).toBe(`Revoked token ${doomed.record.id} of cli_revoker\n`);
    const rejected = await statusWith(doomed.token);
    expect(rejected.status).toBe(401);
    expect(rejected.reason).toMatch(/revoked/);
    expect((await statusWith(kept.token)).status).toBe(200);
    const states = new Map((await list('cli_revoker')).map((token) => [token.id, token.state]));
    expect(states.get(doomed.record.id)).toBe('revoked');
    expect(states.get(kept.record.id)).toBe('active');
  });

  it('reports a token that was already revoked', async () => {
    const { record } = await createToken(stack.context.stores.tokens, { user: 'cli_twice', scopes: ['jobs:read'] });
    expect((await kiln('token', 'revoke', record.id)).code).toBe(0);

    const { code, output } = await kiln('token', 'revoke', record.id);

    expect(code).toBe(0);
    expect(output).toBe(`Token ${record.id} was already revoked\n`);
  });

  it('revokes an expired token', async () => {
    const { token, record } = await createToken(stack.context.stores.tokens, {
      user: 'cli_expired',
      scopes: ['jobs:read'],
      expiresAt: Date.now() - 1000,
    });
    expect((await statusWith(token)).reason).toMatch(/expired/);

    expect((await kiln('token', 'revoke', record.id)).code).toBe(0);

    expect((await list('cli_expired')).map((listed) => listed.state)).toEqual(['revoked']);
    expect((await statusWith(token)).reason).toMatch(/revoked/);
  });

  it('lets one of two racing revokes revoke and tells the other', async () => {
    const { record } = await createToken(stack.context.stores.tokens, { user: 'cli_racer', scopes: ['jobs:read'] });

    const results = await Promise.allSettled([kiln('token', 'revoke', record.id), kiln('token', 'revoke', record.id)]);
    const outputs = results.map((result) => (result.status === 'fulfilled' ? result.value.output : `error: ${String(result.reason)}`));

    expect(outputs.sort()).toEqual([`Revoked token ${record.id} of cli_racer\n`, `Token ${record.id} was already revoked\n`]);
  });

  it.each([
    ['revoke of an unknown id', ['token', 'revoke', '00000000-0000-0000-0000-000000000000'], /no token has the id 00000000/],
    ['revoke without an id', ['token', 'revoke'], /one token id/],
    ['revoke with two ids', ['token', 'revoke', 'a', 'b'], /one token id/],
    ['list without --user', ['token', 'list'], /--user is required/],
    ['list of an invalid user name', ['token', 'list', '--user', 'Not Valid'], /not a valid user name/],
    ['an unknown token command', ['token', 'rotate'], /unknown token command "rotate"/],
  ])('rejects %s', async (_case, argv, message) => {
    await expect(kiln(...argv)).rejects.toThrow(message);
  });
});
