/**
 * Installation of a job's secrets in the build's HOME. Log lines name each
 * secret by name, id and type, never by value, and the values are masked in
 * every log through `secret-masker.ts` before anything here runs.
 *
 * NOTE: the local runner leaves installed secrets in the build folder after
 * the job, like every other file that the build wrote there.
 */
import { constants } from 'node:fs';
import { access, chmod, chown, mkdir, open } from 'node:fs/promises';
import path from 'node:path';
import { displayPath, resolveBuildPath } from './build-paths.js';
import type { RunnerSecret, SecretType } from './protocol.js';
import type { BuildUser, CommandResult } from './tasks.js';
import { describeResult } from './tasks.js';

/** A secret from the service with its value decoded from base64. */
export interface DecodedSecret {
  secret: RunnerSecret;
  value: Buffer;
}

/** Mode of a file secret whose mode the service left out. */
const DEFAULT_FILE_MODE = 0o600;
const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** SSH keys are written as `~/.ssh/<id>`, so an id must be a plain file name. */
const FILE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;
const TYPE_NAMES: Record<SecretType, string> = { ssh_key: 'SSH key', pgp_key: 'PGP key', plaintext_file: 'file secret' };

/** Returns `SSH key "deploy" (id 3f2a…)`, the form in which log lines and reasons name a secret. */
export function describeSecret(secret: Pick<RunnerSecret, 'id' | 'name' | 'type'>): string {
  return `${TYPE_NAMES[secret.type] ?? 'secret'} ${JSON.stringify(secret.name)} (id ${secret.id})`;
}

/**
 * Checks the body of `POST .../secrets` and decodes each value. Returns the
 * secrets in the service's order, or why the body is invalid.
 */
export function decodeSecrets(body: unknown): DecodedSecret[] | string {
  const list = (body as { secrets?: unknown } | null)?.secrets;
  if (!Array.isArray(list)) {
    return 'the response has no "secrets" list';
  }
  const decoded: DecodedSecret[] = [];
  for (const [index, entry] of list.entries()) {
    const secret = entry as Partial<RunnerSecret>;
    if (typeof secret.id !== 'string' || secret.id === '' || typeof secret.name !== 'string') {
      return `secret ${index + 1} has no id or name`;
    }
    if (secret.type !== 'ssh_key' && secret.type !== 'pgp_key' && secret.type !== 'plaintext_file') {
      return `secret ${JSON.stringify(secret.name)} (id ${secret.id}) has the unknown type ${JSON.stringify(secret.type)}`;
    }
    const described = describeSecret(secret as RunnerSecret);
    if (typeof secret.value !== 'string' || !STRICT_BASE64.test(secret.value)) {
      return `${described} has a value that is not base64`;
    }
    if (secret.type === 'ssh_key' && !FILE_NAME.test(secret.id)) {
      return `${described} has an id that cannot be a file name in ~/.ssh`;
    }
    if (secret.type === 'plaintext_file') {
      if (typeof secret.path !== 'string') {
        return `${described} has no path`;
      }
      if (secret.mode !== undefined && !(Number.isInteger(secret.mode) && secret.mode >= 0 && secret.mode <= 0o777)) {
        return `${described} has the mode ${JSON.stringify(secret.mode)}, which is not a number from 0 to 0o777`;
      }
    }
    decoded.push({ secret: secret as RunnerSecret, value: Buffer.from(secret.value, 'base64') });
  }
  return decoded;
}

/** Settings and callbacks that installing secrets needs from the job run. */
export interface SecretInstallation {
  home: string;
  user: BuildUser;
  /** Whether a file secret may be written outside HOME, which only a runner in a container of its own allows. */
  allowOutsideHome: boolean;
  /** PATH of build commands, where gpg is looked up. */
  commandPath: string;
  /** Writes one line to the setup log. */
  log: (line: string) => void;
  /** Runs `gpg --batch --import` as the build user with the key on stdin and its output in the setup log. */
  importPgpKey: (key: Buffer) => Promise<CommandResult>;
}

/** Result of {@link installSecrets}. */
export interface InstalledSecrets {
  /** The reason the installation failed, or null. */
  failure: string | null;
  /** Whether gpg ran, which starts a gpg-agent in a session of its own that outlives the job unless it is stopped. */
  gpgRan: boolean;
}

/**
 * Installs secrets in the service's order and stops at the first failure.
 * Each SSH key goes to `~/.ssh/<id>`, and the first one also to
 * `~/.ssh/id_rsa`. Each PGP key goes into the build user's gpg keyring,
 * unless gpg is missing. Each file secret goes to its path with its mode.
 */
export async function installSecrets(secrets: readonly DecodedSecret[], installation: SecretInstallation): Promise<InstalledSecrets> {
  let sshKeys = 0;
  let gpgRan = false;
  for (const { secret, value } of secrets) {
    let failure: string | null = null;
    switch (secret.type) {
      case 'ssh_key':
        await installSshKey(secret, value, sshKeys === 0, installation);
        sshKeys += 1;
        break;
      case 'pgp_key': {
        const imported = await importPgpKey(secret, value, installation);
        failure = imported.failure;
        gpgRan ||= imported.gpgRan;
        break;
      }
      case 'plaintext_file':
        failure = await writeFileSecret(secret, value, installation);
        break;
    }
    if (failure !== null) {
      return { failure, gpgRan };
    }
  }
  return { failure: null, gpgRan };
}

async function installSshKey(secret: RunnerSecret, value: Buffer, first: boolean, installation: SecretInstallation): Promise<void> {
  const folder = path.join(installation.home, '.ssh');
  await makeFolders(folder, installation.user);
  await chmod(folder, 0o700);

  const files = [path.join(folder, secret.id)];
  if (first) {
    files.push(path.join(folder, 'id_rsa'));
  }
  for (const file of files) {
    await writeSecretFile(file, value, 0o600, installation.user);
  }
  const shown = files.map((file) => displayPath(file, installation.home)).join(' and ');
  installation.log(`Installed ${describeSecret(secret)} as ${shown}.`);
}

async function importPgpKey(
  secret: RunnerSecret,
  value: Buffer,
  installation: SecretInstallation,
): Promise<{ failure: string | null; gpgRan: boolean }> {
  if (!(await findExecutable('gpg', installation.commandPath))) {
    installation.log(`Skipping ${describeSecret(secret)}: gpg is not installed, so the key cannot be imported.`);
    return { failure: null, gpgRan: false };
  }
  installation.log(`Importing ${describeSecret(secret)}: gpg --batch --import`);
  const result = await installation.importPgpKey(value);
  if (result.exitCode !== 0) {
    const reason = `importing ${describeSecret(secret)} failed (gpg: ${describeResult(result)})`;
    installation.log(`Importing ${describeSecret(secret)} failed (gpg: ${describeResult(result)}).`);
    return { failure: reason, gpgRan: true };
  }
  installation.log(`Imported ${describeSecret(secret)}.`);
  return { failure: null, gpgRan: true };
}

/** Writes a file secret. Returns why it cannot, or null. */
async function writeFileSecret(secret: RunnerSecret, value: Buffer, installation: SecretInstallation): Promise<string | null> {
  const requested = secret.path ?? '';
  const resolved = resolveBuildPath(requested, installation.home, installation.allowOutsideHome);
  if (!resolved.ok) {
    const reason = `${describeSecret(secret)} cannot be written to ${JSON.stringify(requested)}: ${resolved.reason}`;
    installation.log(`Cannot install ${describeSecret(secret)} at ${JSON.stringify(requested)}: ${resolved.reason}.`);
    return reason;
  }

  const mode = secret.mode ?? DEFAULT_FILE_MODE;
  await makeFolders(path.dirname(resolved.path), installation.user);
  await writeSecretFile(resolved.path, value, mode, installation.user);
  installation.log(`Wrote ${describeSecret(secret)} to ${displayPath(resolved.path, installation.home)} with mode ${mode.toString(8).padStart(3, '0')}.`);
  return null;
}

/**
 * Writes a secret file with exactly `mode`, which `open` alone would narrow
 * by the umask and leave unchanged on an existing file. O_NOFOLLOW makes a
 * symbolic link at the path an error instead of a redirect.
 */
async function writeSecretFile(file: string, value: Buffer, mode: number, user: BuildUser): Promise<void> {
  const handle = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, mode & 0o700);
  try {
    await handle.writeFile(value);
    if (user.ids) {
      await handle.chown(user.ids.uid, user.ids.gid);
    }
    await handle.chmod(mode);
  } finally {
    await handle.close();
  }
}

/** Creates a folder and its missing parents, and gives the created ones to the build user. */
async function makeFolders(folder: string, user: BuildUser): Promise<void> {
  const first = await mkdir(folder, { recursive: true });
  if (first === undefined || !user.ids) {
    return;
  }
  for (let current = folder; ; current = path.dirname(current)) {
    await chown(current, user.ids.uid, user.ids.gid);
    if (current === first || current === path.dirname(current)) {
      return;
    }
  }
}

/** Returns whether an executable of that name is on `commandPath`, the way a shell would find it. */
export async function findExecutable(name: string, commandPath: string): Promise<boolean> {
  for (const folder of commandPath.split(':')) {
    if (folder === '') {
      continue;
    }
    try {
      await access(path.join(folder, name), constants.X_OK);
      return true;
    } catch {
      // Not in this folder, so the search goes on.
    }
  }
  return false;
}
