import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { JobView } from '../api/job-view.js';
import type { SecretView } from '../secrets/secrets.js';
import { createToken, parseScopes, validateUserName } from '../auth/tokens.js';
import { KilnError, ValidationError } from '../errors.js';
import { createStores, type Stores } from '../store/index.js';
import { ApiClient, ApiError } from './api-client.js';
import { followJob } from './follow.js';

const USAGE = `Usage: kiln <command> [options]

Commands:
  token create --user NAME --scopes jobs:read,jobs:write [--expires DAYS] [--table TABLE]
      Create an API token, store its hash and print the token.
  token list --user NAME [--table TABLE]
      Print the ids, states and scopes of a user's tokens.
  token revoke ID [--table TABLE]
      Revoke a token by the id that "token list" prints.
  submit FILE [--note NOTE] [--tag TAG]... [--no-execute] [--follow]
      Submit a build manifest and print the job's id and URL.
  show ID
      Print a job's state and its tasks.
  secret add --name NAME --type ssh_key|pgp_key|plaintext_file [--path PATH --mode MODE] FILE
      Store the contents of FILE as an encrypted secret and print its id.
  secret list
      Print the ids, names and types of your secrets.
  secret rm ID
      Delete a secret.

Options for submit, show and secret:
  --url URL      Kiln's API (default: $KILN_URL, else http://127.0.0.1:$KILN_API_PORT or 8080)
  --token TOKEN  API token (default: $KILN_TOKEN, else $KILN_DATA_DIR/token, where npm start writes it)

Options for the token commands:
  --table TABLE  DynamoDB table of a deployed Kiln, reached with your AWS credentials
                 (default: the local stack's table at http://127.0.0.1:$KILN_DYNAMODB_PORT or 8082)
`;

/** A usage mistake; printed with a hint to run `kiln --help`. */
class UsageError extends KilnError {
  override name = 'UsageError';
}

type Write = (text: string) => void;

export async function runCli(argv: string[], out: Write, env: NodeJS.ProcessEnv): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    out(USAGE);
    return 0;
  }

  switch (command) {
    case 'token':
      return runToken(rest, out, env);
    case 'submit':
      return runSubmit(rest, out, env);
    case 'show':
      return runShow(rest, out, env);
    case 'secret':
      return runSecret(rest, out, env);
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

function tokenStores(table: string | undefined, env: NodeJS.ProcessEnv) {
  if (table) return createStores(table);

  return createStores('kiln', {
    endpoint: `http://127.0.0.1:${env.KILN_DYNAMODB_PORT || 8082}`,
    region: 'us-east-1',
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    maxAttempts: 1,
  });
}

async function runToken(argv: string[], out: Write, env: NodeJS.ProcessEnv): Promise<number> {
  const [action, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: action === 'revoke',
    options: {
      user: { type: 'string' },
      scopes: { type: 'string' },
      expires: { type: 'string' },
      table: { type: 'string' },
    },
  });
  const stores = tokenStores(values.table, env);
  const where = values.table ? `table ${values.table}` : 'the local stack (is "npm start" running?)';
  try {
    switch (action) {
      case 'create':
        return await createTokenCommand(stores, values, out);
      case 'list':
        return await listTokensCommand(stores, values, out);
      case 'revoke':
        return await revokeTokenCommand(stores, positionals, out);
      default:
        throw new UsageError(`unknown token command "${action ?? ''}"; use create, list or revoke`);
    }
  } catch (error) {
    if (error instanceof KilnError) throw error;
    throw new Error(`failed to reach the tokens in ${where}: ${(error as Error).message}`, { cause: error });
  } finally {
    stores.dynamodb.destroy();
  }
}

async function createTokenCommand(
  stores: Stores,
  values: { user?: string; scopes?: string; expires?: string },
  out: Write,
): Promise<number> {
  if (!values.user) throw new UsageError('--user is required');
  if (!values.scopes) throw new UsageError('--scopes is required, such as --scopes jobs:read,jobs:write');

  const scopes = parseScopes(values.scopes);
  const expiresAt = values.expires === undefined ? null : Date.now() + parseDays(values.expires) * 86_400_000;
  const { token } = await createToken(stores.tokens, { user: values.user, scopes, expiresAt });
  out(`${token}\n`);

  return 0;
}

async function listTokensCommand(stores: Stores, values: { user?: string }, out: Write): Promise<number> {
  if (!values.user) throw new UsageError('--user is required');

  const tokens = await stores.tokens.listByUser(validateUserName(values.user));
  if (tokens.length === 0) out(`No tokens for ${values.user}\n`);
  for (const token of tokens) {
    const state = token.revokedAt !== null ? 'revoked' : token.expiresAt !== null && token.expiresAt <= Date.now() ? 'expired' : 'active';
    const expires = token.expiresAt === null ? 'never' : new Date(token.expiresAt).toISOString();
    out(`${token.id}  ${state.padEnd(7)}  created ${new Date(token.createdAt).toISOString()}  expires ${expires}  ${token.scopes.join(',')}\n`);
  }

  return 0;
}

async function revokeTokenCommand(stores: Stores, positionals: string[], out: Write): Promise<number> {
  if (positionals.length !== 1) throw new UsageError('revoke takes one token id, as "kiln token list" prints it');

  const token = await stores.tokens.findById(positionals[0]);
  if (!token) throw new UsageError(`no token has the id ${positionals[0]}; "kiln token list --user NAME" prints the ids`);
  if (token.revokedAt !== null) {
    out(`Token ${token.id} was already revoked\n`);
    return 0;
  }
  try {
    await stores.tokens.revoke(token.hash, Date.now());
  } catch (error) {
    // Another revoke wrote between the read above and this conditional write.
    if (!(error instanceof ConditionalCheckFailedException)) throw error;
    out(`Token ${token.id} was already revoked\n`);
    return 0;
  }
  out(`Revoked token ${token.id} of ${token.user}\n`);

  return 0;
}

function parseDays(value: string): number {
  const days = Number(value);
  if (!Number.isFinite(days) || days <= 0 || days > 36_500) {
    throw new UsageError(`--expires takes a number of days from 1 to 36500, not "${value}"`);
  }

  return days;
}

async function clientFrom(values: { url?: string; token?: string }, env: NodeJS.ProcessEnv): Promise<ApiClient> {
  const url = (values.url ?? env.KILN_URL ?? `http://127.0.0.1:${env.KILN_API_PORT || 8080}`).replace(/\/+$/, '');
  let token = values.token ?? env.KILN_TOKEN;
  if (!token) {
    const tokenFile = path.join(env.KILN_DATA_DIR || '.kiln', 'token');
    token = (await readFile(tokenFile, 'utf8').catch(() => '')).trim();
    if (!token) throw new UsageError(`no token: pass --token, set KILN_TOKEN, or start the local stack, which writes ${tokenFile}`);
  }

  return new ApiClient(url, token);
}

async function runSubmit(argv: string[], out: Write, env: NodeJS.ProcessEnv): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      note: { type: 'string' },
      tag: { type: 'string', multiple: true },
      'no-execute': { type: 'boolean' },
      follow: { type: 'boolean' },
      url: { type: 'string' },
      token: { type: 'string' },
    },
  });
  if (positionals.length !== 1) throw new UsageError('submit takes one manifest file');

  const manifest = await readFile(positionals[0], 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new UsageError(`cannot read ${positionals[0]}: ${error.code ?? error.message}`);
  });
  const client = await clientFrom(values, env);
  const job = await client.request<JobView>('POST', '/api/jobs', {
    manifest,
    note: values.note,
    tags: values.tag,
    execute: !values['no-execute'],
  });
  out(`Job ${job.id}: ${client.baseUrl}/api/jobs/${job.id}\n`);
  if (!values.follow) return 0;

  const final = await followJob(client, job.id, out);

  return final.status === 'success' ? 0 : 1;
}

async function runShow(argv: string[], out: Write, env: NodeJS.ProcessEnv): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { url: { type: 'string' }, token: { type: 'string' } },
  });
  if (positionals.length !== 1 || !/^\d+$/.test(positionals[0])) throw new UsageError('show takes one job id');

  const client = await clientFrom(values, env);
  const job = await client.getJob(Number(positionals[0]));
  out(`Job ${job.id} ${job.status}\n`);
  out(`  owner   ${job.owner.canonical_name}\n`);
  if (job.note) out(`  note    ${job.note}\n`);
  if (job.tags) out(`  tags    ${job.tags}\n`);
  out(`  runner  ${job.runner ?? '-'}\n`);
  for (const task of job.tasks) out(`  task ${task.name.padEnd(24)} ${task.status}\n`);

  return 0;
}

async function runSecret(argv: string[], out: Write, env: NodeJS.ProcessEnv): Promise<number> {
  const [action, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      name: { type: 'string' },
      type: { type: 'string' },
      path: { type: 'string' },
      mode: { type: 'string' },
      url: { type: 'string' },
      token: { type: 'string' },
    },
  });
  const client = await clientFrom(values, env);

  switch (action) {
    case 'add': {
      if (positionals.length !== 1) throw new UsageError('secret add takes one file with the secret value');
      const value = await readFile(positionals[0]).catch((error: NodeJS.ErrnoException) => {
        throw new UsageError(`cannot read ${positionals[0]}: ${error.code ?? error.message}`);
      });
      const secret = await client.request<SecretView>('POST', '/api/secrets', {
        name: values.name,
        type: values.type,
        path: values.path,
        mode: values.mode,
        secret_base64: value.toString('base64'),
      });
      out(`${secret.id}\n`);
      return 0;
    }
    case 'list': {
      const page = await client.request<{ results: SecretView[] }>('GET', '/api/secrets');
      if (page.results.length === 0) out('No secrets\n');
      for (const secret of page.results) {
        const file = secret.path ? `  ${secret.path} (${secret.mode})` : '';
        out(`${secret.id}  ${secret.type.padEnd(14)}  ${secret.name}${file}\n`);
      }
      return 0;
    }
    case 'rm': {
      if (positionals.length !== 1) throw new UsageError('secret rm takes one secret id, as "kiln secret list" prints it');
      await client.request('DELETE', `/api/secrets/${encodeURIComponent(positionals[0])}`);
      out(`Deleted secret ${positionals[0]}\n`);
      return 0;
    }
    default:
      throw new UsageError(`unknown secret command "${action ?? ''}"; use add, list or rm`);
  }
}

/** Runs the CLI on the process's arguments and sets the exit code. */
export async function main(): Promise<void> {
  try {
    process.exitCode = await runCli(process.argv.slice(2), (text) => process.stdout.write(text), process.env);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`kiln: ${error.message}\nRun "kiln --help" for usage.\n`);
      process.exitCode = 2;
    } else if (error instanceof ValidationError || error instanceof ApiError) {
      process.stderr.write(`kiln: ${error.message}\n`);
      process.exitCode = 1;
    } else if (error instanceof TypeError && (error as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      process.stderr.write(`kiln: ${error.message}\nRun "kiln --help" for usage.\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`kiln: ${(error as Error).message}\n`);
      process.exitCode = 1;
    }
  }
}

