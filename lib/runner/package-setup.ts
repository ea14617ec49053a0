/**
 * The package step of a container runner: adds the manifest's repositories
 * and installs its packages with the commands of `packages.ts` for the
 * package manager of the claimed image, logging each command before it runs.
 */
import { ValidationError } from '../errors.js';
import { findImage } from '../manifest/images.js';
import { quoteShellWord } from './buildenv.js';
import { packageSetupCommands, type PackageRequest, type SetupCommand } from './packages.js';
import { hideUrlPassword } from './sources.js';
import { describeResult, type CommandResult } from './tasks.js';

export interface PackageSetupOptions {
  /** The claimed image's name, such as `debian/stable`; the image catalog maps it to its package manager. */
  image: string;
  request: PackageRequest;
  /** Whether the runner runs as root, which commands of user `root` need. */
  runnerIsRoot: boolean;
  /** The build user's name, for the log lines of commands that run as user `build`. */
  buildUser: string;
  /** Runs one command as the account that `command.user` names, with its output in the setup log. */
  run: (command: SetupCommand) => Promise<CommandResult>;
  /** Writes one line to the setup log. */
  log: (line: string) => void;
  /** Aborted when the job stops. No command starts after that. */
  signal: AbortSignal;
}

/** Outcome of {@link installPackages}. `reason` goes into the job's failure reason. */
export type PackageSetupResult = { status: 'done' } | { status: 'stopped' } | { status: 'failed'; reason: string };

/**
 * Adds the repositories in manifest order, then installs the packages. Runs
 * nothing and fails when the image is not in the catalog, a repository's
 * source line is invalid, or a root command cannot run as root. Otherwise it
 * stops at the first command that fails, with the command and its exit code
 * in the log.
 */
export async function installPackages(options: PackageSetupOptions): Promise<PackageSetupResult> {
  const { packages, repositories } = options.request;
  const repositoryNames = Object.keys(repositories);
  if (packages.length === 0 && repositoryNames.length === 0) {
    options.log('No packages or repositories to install.');
    return { status: 'done' };
  }

  const image = findImage(options.image);
  if (image === undefined) {
    options.log(`Cannot install packages: image ${options.image} is not in the image catalog, so its package manager is unknown.`);
    return { status: 'failed', reason: `the package manager of image ${options.image} is unknown` };
  }
  const manager = image.packageManager;

  let commands: SetupCommand[];
  try {
    commands = packageSetupCommands(manager, options.request);
  } catch (error) {
    if (!(error instanceof ValidationError)) {
      throw error;
    }
    const message = hideUrlPassword(error.message).replace(/\.$/, '');
    options.log(`Cannot install packages: ${message}.`);
    return { status: 'failed', reason: `invalid packages or repositories: ${message}` };
  }

  if (!options.runnerIsRoot && commands.some((command) => command.user === 'root')) {
    options.log(`Cannot install packages: ${manager} needs root, but the runner does not run as root.`);
    return { status: 'failed', reason: 'installing packages needs a runner that runs as root' };
  }

  if (repositoryNames.length > 0) {
    options.log(`Adding repositories for ${manager}: ${repositoryNames.join(' ')}.`);
  }
  if (packages.length > 0) {
    options.log(`Installing packages with ${manager}: ${packages.join(' ')}.`);
  }

  for (const command of commands) {
    if (options.signal.aborted) {
      return { status: 'stopped' };
    }
    const commandLine = formatArgv(command.argv);
    const account = command.user === 'root' ? 'root' : `user ${options.buildUser}`;
    const input = command.input === undefined ? '' : `, with standard input ${JSON.stringify(hideUrlPassword(command.input))}`;
    options.log(`Running as ${account}: ${commandLine}${input}`);

    const result = await options.run(command);
    if (result.exitCode !== 0) {
      options.log(`Package setup failed: ${commandLine} (${describeResult(result)}).`);
      return { status: 'failed', reason: `package setup failed (${programName(command.argv)}: ${describeResult(result)})` };
    }
  }

  options.log('Package setup succeeded.');
  return { status: 'done' };
}

/** Formats an argv as a shell command line, with URL passwords hidden. */
function formatArgv(argv: readonly string[]): string {
  return argv.map((word) => quoteShellWord(hideUrlPassword(word))).join(' ');
}

/** Returns the program that a command runs, looking past `env NAME=value`. */
function programName(argv: readonly string[]): string {
  if (argv[0] !== 'env') {
    return argv[0];
  }
  return argv.slice(1).find((word) => !word.includes('=')) ?? 'env';
}
