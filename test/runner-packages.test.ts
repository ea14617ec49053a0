import { describe, expect, it } from 'vitest';
import { ValidationError } from '../lib/errors.js';
import { IMAGES, type PackageManager } from '../lib/manifest/images.js';
import {
  KEY_SERVER,
  installCommands,
  packageSetupCommands,
  repositoryCommands,
  type SetupCommand,
} from '../lib/runner/packages.js';

const root = (argv: string[], input?: string): SetupCommand => (input === undefined ? { argv, user: 'root' } : { argv, input, user: 'root' });
const asBuild = (argv: string[]): SetupCommand => ({ argv, user: 'build' });
const CURL = ['curl', '--fail', '--silent', '--show-error', '--location'];

function validationReason(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return (error as ValidationError).message;
  }
  throw new Error('expected a ValidationError');
}

describe('installCommands', () => {
  it('installs with apk after refreshing the index', () => {
    expect(installCommands('apk', ['git', 'curl'])).toEqual([root(['apk', 'update']), root(['apk', 'add', 'git', 'curl'])]);
  });

  it('installs with apt-get without prompts', () => {
    expect(installCommands('apt', ['build-essential'])).toEqual([
      root(['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', 'update']),
      root(['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', 'install', '-y', 'build-essential']),
    ]);
  });

  it('installs with dnf', () => {
    expect(installCommands('dnf', ['gcc', 'make'])).toEqual([root(['dnf', '-y', 'install', 'gcc', 'make'])]);
  });

  it('installs with pacman as a full upgrade', () => {
    expect(installCommands('pacman', ['base-devel'])).toEqual([
      root(['pacman', '-Syu', '--noconfirm', '--needed', 'base-devel']),
    ]);
  });

  it('installs with nix-env as the build user', () => {
    expect(installCommands('nix', ['nixpkgs.hello'])).toEqual([
      asBuild(['nix-channel', '--update']),
      asBuild(['nix-env', '-iA', 'nixpkgs.hello']),
    ]);
  });

  it('passes shell metacharacters through as one argument', () => {
    const [, add] = installCommands('apk', ['a;rm', '$(id)']);

    expect(add.argv).toEqual(['apk', 'add', 'a;rm', '$(id)']);
  });

  it.each(['-y', '', 'two words', 'line\nbreak'])('rejects package name %j', (name) => {
    expect(validationReason(() => installCommands('apt', [name]))).toContain('Invalid package name');
  });

  it('covers every package manager of the image catalog', () => {
    const managers = new Set<PackageManager>(IMAGES.map((image) => image.packageManager));

    for (const manager of managers) {
      expect(installCommands(manager, ['x']).length).toBeGreaterThan(0);
    }
  });
});

describe('repositoryCommands for apk', () => {
  it('adds a tagged repository', () => {
    expect(repositoryCommands('apk', 'testing', 'https://dl-cdn.alpinelinux.org/alpine/edge/testing')).toEqual([
      root(['tee', '-a', '/etc/apk/repositories'], '@testing https://dl-cdn.alpinelinux.org/alpine/edge/testing\n'),
    ]);
  });

  it('downloads the key under its given name', () => {
    const commands = repositoryCommands('apk', 'mine', 'https://example.org/alpine https://example.org/keys/k.pub me.rsa.pub');

    expect(commands).toEqual([
      root([...CURL, '--proto', '=https', '--output', '/etc/apk/keys/me.rsa.pub', 'https://example.org/keys/k.pub']),
      root(['tee', '-a', '/etc/apk/repositories'], '@mine https://example.org/alpine\n'),
    ]);
  });

  it('names the key after its URL when no name is given', () => {
    const [download] = repositoryCommands('apk', 'mine', 'https://example.org/alpine https://example.org/keys/me.rsa.pub');

    expect(download.argv).toContain('/etc/apk/keys/me.rsa.pub');
  });

  it('rejects a key fetched over plain HTTP', () => {
    expect(validationReason(() => repositoryCommands('apk', 'mine', 'https://example.org/a http://example.org/k.pub'))).toContain(
      'must use https',
    );
  });

  it('rejects a key name with a slash', () => {
    expect(validationReason(() => repositoryCommands('apk', 'mine', 'https://e.org/a https://e.org/k.pub ../k.pub'))).toContain(
      'Invalid key name',
    );
  });

  it('rejects four words', () => {
    expect(validationReason(() => repositoryCommands('apk', 'mine', 'https://e.org/a https://e.org/k k x'))).toContain(
      'repositories.mine',
    );
  });
});

describe('repositoryCommands for apt', () => {
  it('adds a source without a key', () => {
    expect(repositoryCommands('apt', 'extra', 'https://deb.example.org/debian stable main')).toEqual([
      root(['tee', '/etc/apt/sources.list.d/kiln-extra.list'], 'deb https://deb.example.org/debian stable main\n'),
    ]);
  });

  it('fetches the key and pins the source to it', () => {
    const commands = repositoryCommands('apt', 'llvm', 'http://apt.llvm.org/bookworm/ llvm-toolchain-bookworm main 15CF4D18AF4F7421');

    expect(commands).toEqual([
      root(['install', '-d', '-m', '0755', '/etc/apt/keyrings']),
      root(['gpg', '--batch', '--keyserver', KEY_SERVER, '--recv-keys', '15CF4D18AF4F7421']),
      root(['gpg', '--batch', '--yes', '--output', '/etc/apt/keyrings/kiln-llvm.gpg', '--export', '15CF4D18AF4F7421']),
      root(
        ['tee', '/etc/apt/sources.list.d/kiln-llvm.list'],
        'deb [signed-by=/etc/apt/keyrings/kiln-llvm.gpg] http://apt.llvm.org/bookworm/ llvm-toolchain-bookworm main\n',
      ),
    ]);
  });

  it.each([
    ['two words', 'https://e.org/debian stable', 'got 2 words'],
    ['five words', 'https://e.org/debian stable main ABCDEF12 extra', 'got 5 words'],
    ['a key id that is not hex', 'https://e.org/debian stable main not-a-key', 'Invalid key id'],
    ['an option in the distribution', 'https://e.org/debian [trusted=yes] main', 'Invalid distribution'],
    ['a relative URL', 'deb.example.org stable main', 'Invalid repository URL'],
    ['an ftp URL', 'ftp://e.org/debian stable main', 'must use http or https'],
  ])('rejects %s', (_case, source, reason) => {
    expect(validationReason(() => repositoryCommands('apt', 'extra', source))).toContain(reason);
  });
});

describe('repositoryCommands for dnf', () => {
  it('downloads the repo file', () => {
    expect(repositoryCommands('dnf', 'docker', 'https://download.docker.com/linux/fedora/docker-ce.repo')).toEqual([
      root([
        ...CURL,
        '--proto',
        '=https,http',
        '--output',
        '/etc/yum.repos.d/kiln-docker.repo',
        'https://download.docker.com/linux/fedora/docker-ce.repo',
      ]),
    ]);
  });

  it('rejects more than a URL', () => {
    expect(validationReason(() => repositoryCommands('dnf', 'x', 'https://e.org/x.repo extra'))).toContain('got 2 words');
  });
});

describe('repositoryCommands for pacman', () => {
  it('adds a section and trusts its key', () => {
    const commands = repositoryCommands('pacman', 'chaotic', 'https://e.org/$repo/$arch#3056513887B78AEB');

    expect(commands).toEqual([
      root(['tee', '-a', '/etc/pacman.conf'], '\n[chaotic]\nServer = https://e.org/$repo/$arch\n'),
      root(['pacman-key', '--keyserver', KEY_SERVER, '--recv-keys', '3056513887B78AEB']),
      root(['pacman-key', '--lsign-key', '3056513887B78AEB']),
    ]);
  });

  it('adds a section without a key', () => {
    expect(repositoryCommands('pacman', 'local', 'https://e.org/arch')).toEqual([
      root(['tee', '-a', '/etc/pacman.conf'], '\n[local]\nServer = https://e.org/arch\n'),
    ]);
  });

  it('rejects a line break that would add configuration', () => {
    expect(validationReason(() => repositoryCommands('pacman', 'x', 'https://e.org/a\nSigLevel = Never'))).toContain(
      'control character',
    );
  });
});

describe('repositoryCommands for nix', () => {
  it('adds and updates the channel as the build user', () => {
    expect(repositoryCommands('nix', 'unstable', 'https://nixos.org/channels/nixpkgs-unstable')).toEqual([
      asBuild(['nix-channel', '--add', 'https://nixos.org/channels/nixpkgs-unstable', 'unstable']),
      asBuild(['nix-channel', '--update', 'unstable']),
    ]);
  });
});

describe('repositoryCommands names', () => {
  it.each(['../etc', '-x', 'a b', ''])('rejects repository name %j', (name) => {
    expect(validationReason(() => repositoryCommands('apk', name, 'https://e.org/a'))).toContain('Invalid repository name');
  });
});

describe('packageSetupCommands', () => {
  it('adds repositories before installing', () => {
    const commands = packageSetupCommands('apk', {
      packages: ['hello@testing'],
      repositories: { testing: 'https://e.org/testing' },
    });

    expect(commands.map((command) => command.argv.join(' '))).toEqual([
      'tee -a /etc/apk/repositories',
      'apk update',
      'apk add hello@testing',
    ]);
  });

  it('refreshes the index when repositories come without packages', () => {
    const commands = packageSetupCommands('apt', { packages: [], repositories: { extra: 'https://e.org/d stable main' } });

    expect(commands.at(-1)).toEqual(root(['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', 'update']));
  });

  it('returns nothing for an empty request', () => {
    expect(packageSetupCommands('dnf', { packages: [], repositories: {} })).toEqual([]);
  });

  it('keeps the manifest order of repositories', () => {
    const commands = packageSetupCommands('nix', {
      packages: [],
      repositories: { second: 'https://e.org/b', first: 'https://e.org/a' },
    });

    expect(commands.map((command) => command.argv.at(-1))).toEqual(['second', 'second', 'first', 'first']);
  });
});
