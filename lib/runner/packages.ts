/**
 * Commands that install a manifest's `packages` and add its `repositories`
 * in a container runner, for each package-manager family of the image
 * catalog. Every command is an argv array, and text destined for a
 * configuration file travels on standard input to `tee`, so no value from a
 * manifest is ever parsed by a shell.
 *
 * Repository source lines follow build.sr.ht's images:
 *
 * - apk: `url [key-url [key-name]]`, added as the tagged repository `@name`.
 * - apt: `url dist component [key-id]`, the key fetched from keyserver.ubuntu.com.
 * - dnf: `url` of a `.repo` file, saved to `/etc/yum.repos.d`.
 * - pacman: `url[#key-id]`, added as the section `[name]` of pacman.conf.
 * - nix: `url` of a channel, added as the build user's channel `name`.
 */
import { ValidationError } from '../errors.js';
import type { PackageManager } from '../manifest/images.js';

/** One command of the package setup. */
export interface SetupCommand {
  argv: string[];
  /** Text written to the command's standard input; none when absent. */
  input?: string;
  /**
   * The account that runs the command: `root`, or the `build` user. Nix
   * commands run as the build user, because Nix installs into the caller's profile.
   */
  user: 'root' | 'build';
}

/** A manifest's package requirements, as the runner receives them at its claim. */
export interface PackageRequest {
  packages: readonly string[];
  /** Repository name to the package manager's source line, in manifest order. */
  repositories: Readonly<Record<string, string>>;
}

/** Key server for apt and pacman repository keys; build.sr.ht's images use the same server over hkp. */
export const KEY_SERVER = 'hkps://keyserver.ubuntu.com';

const REPOSITORY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const KEY_ID = /^(?:0x)?[0-9A-Fa-f]{8,40}$/;
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;
const APT_WORD = /^[A-Za-z0-9._/+~-]+$/;
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;

const CURL = ['curl', '--fail', '--silent', '--show-error', '--location'];
const APT_ENV = ['env', 'DEBIAN_FRONTEND=noninteractive'];

/**
 * Builds every command that prepares the image for a job: repositories
 * first, in manifest order, then the package installation. Throws
 * ValidationError naming `repositories.<name>` for a source line that the
 * family cannot read.
 */
export function packageSetupCommands(manager: PackageManager, request: PackageRequest): SetupCommand[] {
  const commands: SetupCommand[] = [];
  for (const [name, source] of Object.entries(request.repositories)) {
    commands.push(...repositoryCommands(manager, name, source));
  }

  if (request.packages.length > 0) {
    commands.push(...installCommands(manager, request.packages));
  } else if (Object.keys(request.repositories).length > 0) {
    commands.push(...refreshCommands(manager));
  }

  return commands;
}

/** Builds the commands that install `packages`, refreshing the package index first. */
export function installCommands(manager: PackageManager, packages: readonly string[]): SetupCommand[] {
  for (const name of packages) {
    // The manifest parser rejects these already; checked again because a
    // leading "-" would turn a package name into an option.
    if (name === '' || name.startsWith('-') || /\s/.test(name) || CONTROL_CHARACTER.test(name)) {
      throw ValidationError.of('packages', `Invalid package name ${JSON.stringify(name)}: list each package as its own item`);
    }
  }

  switch (manager) {
    case 'apk':
      return [root(['apk', 'update']), root(['apk', 'add', ...packages])];
    case 'apt':
      return [root([...APT_ENV, 'apt-get', 'update']), root([...APT_ENV, 'apt-get', 'install', '-y', ...packages])];
    case 'dnf':
      return [root(['dnf', '-y', 'install', ...packages])];
    case 'pacman':
      // Arch Linux does not support partial upgrades, so installing a package
      // upgrades the whole system to the repository's current state.
      return [root(['pacman', '-Syu', '--noconfirm', '--needed', ...packages])];
    case 'nix':
      return [build(['nix-channel', '--update']), build(['nix-env', '-iA', ...packages])];
  }
}

/** Builds the commands that refresh the package index after repositories were added, when nothing is installed. */
function refreshCommands(manager: PackageManager): SetupCommand[] {
  switch (manager) {
    case 'apk':
      return [root(['apk', 'update'])];
    case 'apt':
      return [root([...APT_ENV, 'apt-get', 'update'])];
    case 'pacman':
      return [root(['pacman', '-Sy', '--noconfirm'])];
    case 'dnf':
    case 'nix':
      // dnf reads new repositories on its next run; nix updates each channel as it adds it.
      return [];
  }
}

/** Builds the commands that add one repository. Throws ValidationError for a source line the family cannot read. */
export function repositoryCommands(manager: PackageManager, name: string, source: string): SetupCommand[] {
  const field = `repositories.${name}`;
  if (!REPOSITORY_NAME.test(name)) {
    throw ValidationError.of(field, 'Invalid repository name. Use letters, digits, ".", "_" and "-", starting with a letter or digit.');
  }
  if (CONTROL_CHARACTER.test(source.trim())) {
    throw ValidationError.of(field, 'The source line contains a line break or another control character. Write it on one line.');
  }

  switch (manager) {
    case 'apk':
      return apkRepository(field, name, source);
    case 'apt':
      return aptRepository(field, name, source);
    case 'dnf':
      return dnfRepository(field, name, source);
    case 'pacman':
      return pacmanRepository(field, name, source);
    case 'nix':
      return nixRepository(field, name, source);
  }
}

function apkRepository(field: string, name: string, source: string): SetupCommand[] {
  const words = splitWords(source);
  if (words.length < 1 || words.length > 3) {
    throw ValidationError.of(field, `Expected "url [key-url [key-name]]" for an Alpine repository, got ${words.length} words.`);
  }

  const [url, keyUrl, keyNameGiven] = words;
  requireUrl(field, url, ['http:', 'https:'], 'repository URL');
  const commands: SetupCommand[] = [];
  if (keyUrl !== undefined) {
    requireUrl(field, keyUrl, ['https:'], 'key URL');
    const keyName = keyNameGiven ?? lastPathSegment(keyUrl);
    if (!FILE_NAME.test(keyName)) {
      throw ValidationError.of(field, `Invalid key name ${JSON.stringify(keyName)}: give a file name such as "name.rsa.pub" as the third word.`);
    }
    commands.push(root([...CURL, '--proto', '=https', '--output', `/etc/apk/keys/${keyName}`, keyUrl]));
  }
  commands.push(appendTo('/etc/apk/repositories', `@${name} ${url}\n`));

  return commands;
}

function aptRepository(field: string, name: string, source: string): SetupCommand[] {
  const words = splitWords(source);
  if (words.length < 3 || words.length > 4) {
    throw ValidationError.of(field, `Expected "url dist component [key-id]" for an apt repository, got ${words.length} words.`);
  }

  const [url, dist, component, keyId] = words;
  requireUrl(field, url, ['http:', 'https:'], 'repository URL');
  for (const [label, word] of [['distribution', dist], ['component', component]] as const) {
    if (!APT_WORD.test(word)) throw ValidationError.of(field, `Invalid ${label} ${JSON.stringify(word)}.`);
  }
  if (keyId === undefined) return [writeFile(`/etc/apt/sources.list.d/kiln-${name}.list`, `deb ${url} ${dist} ${component}\n`)];

  requireKeyId(field, keyId);
  const keyring = `/etc/apt/keyrings/kiln-${name}.gpg`;
  return [
    root(['install', '-d', '-m', '0755', '/etc/apt/keyrings']),
    root(['gpg', '--batch', '--keyserver', KEY_SERVER, '--recv-keys', keyId]),
    // apt reads binary OpenPGP keyrings, so the key is exported rather than pointing apt at gpg's keybox.
    root(['gpg', '--batch', '--yes', '--output', keyring, '--export', keyId]),
    writeFile(`/etc/apt/sources.list.d/kiln-${name}.list`, `deb [signed-by=${keyring}] ${url} ${dist} ${component}\n`),
  ];
}

function dnfRepository(field: string, name: string, source: string): SetupCommand[] {
  const words = splitWords(source);
  if (words.length !== 1) {
    throw ValidationError.of(field, `Expected the URL of a .repo file for a dnf repository, got ${words.length} words.`);
  }

  requireUrl(field, words[0], ['http:', 'https:'], 'repository file URL');
  // NOTE: the downloaded file's own `enabled` flags apply. build.sr.ht also
  // runs `dnf config-manager --set-enabled <name>`, which needs a plugin that
  // differs between dnf 4 and dnf 5.
  return [root([...CURL, '--proto', '=https,http', '--output', `/etc/yum.repos.d/kiln-${name}.repo`, words[0]])];
}

function pacmanRepository(field: string, name: string, source: string): SetupCommand[] {
  const trimmed = source.trim();
  const hash = trimmed.lastIndexOf('#');
  const url = hash === -1 ? trimmed : trimmed.slice(0, hash);
  const keyId = hash === -1 ? undefined : trimmed.slice(hash + 1);
  if (/\s/.test(url)) throw ValidationError.of(field, 'Expected "url#key-id" for a pacman repository, without spaces.');

  requireUrl(field, url, ['http:', 'https:'], 'repository URL');
  const commands = [appendTo('/etc/pacman.conf', `\n[${name}]\nServer = ${url}\n`)];
  if (keyId !== undefined) {
    requireKeyId(field, keyId);
    commands.push(root(['pacman-key', '--keyserver', KEY_SERVER, '--recv-keys', keyId]));
    commands.push(root(['pacman-key', '--lsign-key', keyId]));
  }

  return commands;
}

function nixRepository(field: string, name: string, source: string): SetupCommand[] {
  const words = splitWords(source);
  if (words.length !== 1) throw ValidationError.of(field, `Expected the URL of a Nix channel, got ${words.length} words.`);

  requireUrl(field, words[0], ['http:', 'https:'], 'channel URL');
  // Updating only this channel keeps several repositories from updating every channel each time.
  return [build(['nix-channel', '--add', words[0], name]), build(['nix-channel', '--update', name])];
}

function splitWords(source: string): string[] {
  return source.trim().split(/\s+/).filter((word) => word !== '');
}

function requireUrl(field: string, value: string, protocols: readonly string[], label: string): void {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw ValidationError.of(field, `Invalid ${label} ${JSON.stringify(value)}: write an absolute URL such as https://example.org/repo.`);
  }
  if (!protocols.includes(url.protocol)) {
    throw ValidationError.of(field, `The ${label} ${JSON.stringify(value)} must use ${protocols.map((p) => p.slice(0, -1)).join(' or ')}.`);
  }
}

function requireKeyId(field: string, keyId: string): void {
  if (!KEY_ID.test(keyId)) {
    throw ValidationError.of(field, `Invalid key id ${JSON.stringify(keyId)}: write the key's fingerprint or id in hexadecimal.`);
  }
}

function lastPathSegment(url: string): string {
  return new URL(url).pathname.split('/').pop() ?? '';
}

function root(argv: string[]): SetupCommand {
  return { argv, user: 'root' };
}

function build(argv: string[]): SetupCommand {
  return { argv, user: 'build' };
}

function appendTo(file: string, text: string): SetupCommand {
  return { argv: ['tee', '-a', file], input: text, user: 'root' };
}

function writeFile(file: string, text: string): SetupCommand {
  return { argv: ['tee', file], input: text, user: 'root' };
}
