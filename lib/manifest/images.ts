/**
 * The catalog of build images that Kiln offers, kept as data: a deploy builds
 * one container per entry and architecture, `FROM` the entry's `baseImage`.
 *
 * Status as of 2026-12-04. Names follow build.sr.ht's, so that its manifests
 * run unchanged. A name that follows a moving target (`alpine/latest`,
 * `debian/stable`, `ubuntu/lts`, `fedora/latest`) gets its own entry built
 * from the registry's matching moving tag, so it follows the distribution
 * without a catalog change. `rockylinux/latest` is instead an alias of the
 * newest major release, which changes only every few years.
 */

export type Architecture = 'x86_64' | 'arm64';

export type PackageManager = 'apk' | 'apt' | 'dnf' | 'pacman' | 'nix';

export interface CatalogImage {
  /** The canonical name, such as `ubuntu/24.04`. */
  name: string;
  /** Other names that resolve to this entry, such as `ubuntu/noble`. */
  aliases: readonly string[];
  /** The distribution's own name, for messages. */
  distribution: string;
  architectures: readonly Architecture[];
  /** The container image for a Dockerfile `FROM` line. */
  baseImage: string;
  packageManager: PackageManager;
}

/** A release that its distribution no longer supports. */
export interface RetiredImage {
  name: string;
  aliases: readonly string[];
  distribution: string;
}

/** An operating system that build.sr.ht boots as a virtual machine. */
export interface VirtualMachineSystem {
  /** The image name, alone or before `/` and a version, such as `freebsd`. */
  prefix: string;
  distribution: string;
}

const BOTH: readonly Architecture[] = ['x86_64', 'arm64'];

/** The Docker platform string of each architecture, for `docker build --platform`. */
export const DOCKER_PLATFORMS: Readonly<Record<Architecture, string>> = {
  x86_64: 'linux/amd64',
  arm64: 'linux/arm64',
};

export const IMAGES: readonly CatalogImage[] = [
  // Alpine supports each release for about two years: 3.21 ended on 2026-11-01,
  // 3.22 ends on 2027-05-01 and 3.23, released in December 2025, in late 2027.
  // NOTE: 3.24 (due in May 2026) is left out because its release could not be
  // confirmed here. Add it by number once its image is on the registry.
  { name: 'alpine/edge', aliases: [], distribution: 'Alpine Linux', architectures: BOTH, baseImage: 'alpine:edge', packageManager: 'apk' },
  { name: 'alpine/latest', aliases: [], distribution: 'Alpine Linux', architectures: BOTH, baseImage: 'alpine:latest', packageManager: 'apk' },
  { name: 'alpine/3.22', aliases: [], distribution: 'Alpine Linux', architectures: BOTH, baseImage: 'alpine:3.22', packageManager: 'apk' },
  { name: 'alpine/3.23', aliases: [], distribution: 'Alpine Linux', architectures: BOTH, baseImage: 'alpine:3.23', packageManager: 'apk' },

  // Debian 13 trixie is stable and 14 forky is testing. Debian 12 bookworm
  // stays offered: its regular security support ended on 2026-06-10, but Debian
  // LTS covers it on amd64 and arm64 until 2028-06-30.
  { name: 'debian/stable', aliases: [], distribution: 'Debian', architectures: BOTH, baseImage: 'debian:stable', packageManager: 'apt' },
  { name: 'debian/testing', aliases: [], distribution: 'Debian', architectures: BOTH, baseImage: 'debian:testing', packageManager: 'apt' },
  { name: 'debian/sid', aliases: ['debian/unstable'], distribution: 'Debian', architectures: BOTH, baseImage: 'debian:sid', packageManager: 'apt' },
  { name: 'debian/bookworm', aliases: [], distribution: 'Debian', architectures: BOTH, baseImage: 'debian:bookworm', packageManager: 'apt' },
  { name: 'debian/trixie', aliases: [], distribution: 'Debian', architectures: BOTH, baseImage: 'debian:trixie', packageManager: 'apt' },
  { name: 'debian/forky', aliases: [], distribution: 'Debian', architectures: BOTH, baseImage: 'debian:forky', packageManager: 'apt' },

  // The registry's `ubuntu:latest` is the newest LTS release and `ubuntu:rolling`
  // the newest release of any kind. 22.04 has standard support until 2027-06,
  // 24.04 until 2029-05 and 26.04 until 2031-05.
  // NOTE: 26.04 "Resolute Raccoon" was due on 2026-04-23 and its image could not
  // be checked from here. 26.10 is left out because its codename is unknown here.
  { name: 'ubuntu/lts', aliases: [], distribution: 'Ubuntu', architectures: BOTH, baseImage: 'ubuntu:latest', packageManager: 'apt' },
  { name: 'ubuntu/latest', aliases: [], distribution: 'Ubuntu', architectures: BOTH, baseImage: 'ubuntu:rolling', packageManager: 'apt' },
  { name: 'ubuntu/22.04', aliases: ['ubuntu/jammy'], distribution: 'Ubuntu', architectures: BOTH, baseImage: 'ubuntu:22.04', packageManager: 'apt' },
  { name: 'ubuntu/24.04', aliases: ['ubuntu/noble'], distribution: 'Ubuntu', architectures: BOTH, baseImage: 'ubuntu:24.04', packageManager: 'apt' },
  { name: 'ubuntu/26.04', aliases: ['ubuntu/resolute'], distribution: 'Ubuntu', architectures: BOTH, baseImage: 'ubuntu:26.04', packageManager: 'apt' },

  // Fedora supports a release until four weeks after the release two versions
  // later, so 42 ended in spring 2026, four weeks after 44.
  // NOTE: 44 (due in April 2026) and 45 (due in October 2026) are listed from
  // Fedora's schedule, not checked on the registry. 43 is offered on the estimate
  // that its support ends in mid-December 2026, four weeks after 45's release.
  { name: 'fedora/latest', aliases: [], distribution: 'Fedora', architectures: BOTH, baseImage: 'fedora:latest', packageManager: 'dnf' },
  { name: 'fedora/rawhide', aliases: [], distribution: 'Fedora', architectures: BOTH, baseImage: 'fedora:rawhide', packageManager: 'dnf' },
  { name: 'fedora/43', aliases: [], distribution: 'Fedora', architectures: BOTH, baseImage: 'fedora:43', packageManager: 'dnf' },
  { name: 'fedora/44', aliases: [], distribution: 'Fedora', architectures: BOTH, baseImage: 'fedora:44', packageManager: 'dnf' },
  { name: 'fedora/45', aliases: [], distribution: 'Fedora', architectures: BOTH, baseImage: 'fedora:45', packageManager: 'dnf' },

  // Rocky Linux 8 is supported until 2029-05-31, 9 until 2032-05-31 and 10 until
  // 2035-05-31. The base images come from Rocky's own `rockylinux/rockylinux`
  // repository, which publishes every major release, 10 included.
  { name: 'rockylinux/8', aliases: [], distribution: 'Rocky Linux', architectures: BOTH, baseImage: 'rockylinux/rockylinux:8', packageManager: 'dnf' },
  { name: 'rockylinux/9', aliases: [], distribution: 'Rocky Linux', architectures: BOTH, baseImage: 'rockylinux/rockylinux:9', packageManager: 'dnf' },
  { name: 'rockylinux/10', aliases: ['rockylinux/latest'], distribution: 'Rocky Linux', architectures: BOTH, baseImage: 'rockylinux/rockylinux:10', packageManager: 'dnf' },

  // The Arch Linux image is published for x86_64 only.
  { name: 'archlinux', aliases: [], distribution: 'Arch Linux', architectures: ['x86_64'], baseImage: 'archlinux:latest', packageManager: 'pacman' },

  { name: 'nixos/unstable', aliases: ['nixos/latest'], distribution: 'NixOS', architectures: BOTH, baseImage: 'nixos/nix:latest', packageManager: 'nix' },
];

function numberedReleases(prefix: string, first: number, last: number): string[] {
  const names: string[] = [];
  for (let version = first; version <= last; version++) names.push(`${prefix}${version}`);
  return names;
}

function retired(distribution: string, names: readonly string[]): RetiredImage[] {
  return names.map((name) => ({ name, aliases: [], distribution }));
}

export const RETIRED_IMAGES: readonly RetiredImage[] = [
  ...retired('Alpine Linux', numberedReleases('alpine/3.', 0, 21)),
  ...retired('Debian', ['debian/squeeze', 'debian/wheezy', 'debian/jessie', 'debian/stretch', 'debian/buster', 'debian/bullseye']),
  // Standard support of 20.04 ended in May 2025 and of 25.10 in July 2026.
  // Ubuntu Pro's paid extended maintenance does not count as support here.
  { name: 'ubuntu/12.04', aliases: ['ubuntu/precise'], distribution: 'Ubuntu' },
  { name: 'ubuntu/12.10', aliases: ['ubuntu/quantal'], distribution: 'Ubuntu' },
  { name: 'ubuntu/13.04', aliases: ['ubuntu/raring'], distribution: 'Ubuntu' },
  { name: 'ubuntu/13.10', aliases: ['ubuntu/saucy'], distribution: 'Ubuntu' },
  { name: 'ubuntu/14.04', aliases: ['ubuntu/trusty'], distribution: 'Ubuntu' },
  { name: 'ubuntu/14.10', aliases: ['ubuntu/utopic'], distribution: 'Ubuntu' },
  { name: 'ubuntu/15.04', aliases: ['ubuntu/vivid'], distribution: 'Ubuntu' },
  { name: 'ubuntu/15.10', aliases: ['ubuntu/wily'], distribution: 'Ubuntu' },
  { name: 'ubuntu/16.04', aliases: ['ubuntu/xenial'], distribution: 'Ubuntu' },
  { name: 'ubuntu/16.10', aliases: ['ubuntu/yakkety'], distribution: 'Ubuntu' },
  { name: 'ubuntu/17.04', aliases: ['ubuntu/zesty'], distribution: 'Ubuntu' },
  { name: 'ubuntu/17.10', aliases: ['ubuntu/artful'], distribution: 'Ubuntu' },
  { name: 'ubuntu/18.04', aliases: ['ubuntu/bionic'], distribution: 'Ubuntu' },
  { name: 'ubuntu/18.10', aliases: ['ubuntu/cosmic'], distribution: 'Ubuntu' },
  { name: 'ubuntu/19.04', aliases: ['ubuntu/disco'], distribution: 'Ubuntu' },
  { name: 'ubuntu/19.10', aliases: ['ubuntu/eoan'], distribution: 'Ubuntu' },
  { name: 'ubuntu/20.04', aliases: ['ubuntu/focal'], distribution: 'Ubuntu' },
  { name: 'ubuntu/20.10', aliases: ['ubuntu/groovy'], distribution: 'Ubuntu' },
  { name: 'ubuntu/21.04', aliases: ['ubuntu/hirsute'], distribution: 'Ubuntu' },
  { name: 'ubuntu/21.10', aliases: ['ubuntu/impish'], distribution: 'Ubuntu' },
  { name: 'ubuntu/22.10', aliases: ['ubuntu/kinetic'], distribution: 'Ubuntu' },
  { name: 'ubuntu/23.04', aliases: ['ubuntu/lunar'], distribution: 'Ubuntu' },
  { name: 'ubuntu/23.10', aliases: ['ubuntu/mantic'], distribution: 'Ubuntu' },
  { name: 'ubuntu/24.10', aliases: ['ubuntu/oracular'], distribution: 'Ubuntu' },
  { name: 'ubuntu/25.04', aliases: ['ubuntu/plucky'], distribution: 'Ubuntu' },
  { name: 'ubuntu/25.10', aliases: ['ubuntu/questing'], distribution: 'Ubuntu' },
  ...retired('Fedora', numberedReleases('fedora/', 1, 42)),
  ...retired('CentOS', ['centos/7', 'centos/8']),
  // Each NixOS release is supported for seven months, so 25.11 ended on 2026-06-30.
  ...retired('NixOS', [
    'nixos/17.03', 'nixos/17.09', 'nixos/18.03', 'nixos/18.09', 'nixos/19.03', 'nixos/19.09',
    'nixos/20.03', 'nixos/20.09', 'nixos/21.05', 'nixos/21.11', 'nixos/22.05', 'nixos/22.11',
    'nixos/23.05', 'nixos/23.11', 'nixos/24.05', 'nixos/24.11', 'nixos/25.05', 'nixos/25.11',
  ]),
];

export const VIRTUAL_MACHINE_SYSTEMS: readonly VirtualMachineSystem[] = [
  { prefix: 'freebsd', distribution: 'FreeBSD' },
  { prefix: 'openbsd', distribution: 'OpenBSD' },
  { prefix: 'netbsd', distribution: 'NetBSD' },
  { prefix: '9front', distribution: '9front' },
  { prefix: 'guix', distribution: 'Guix System' },
];

const imagesByName = new Map<string, CatalogImage>();
for (const image of IMAGES) {
  for (const name of [image.name, ...image.aliases]) imagesByName.set(name, image);
}

const retiredByName = new Map<string, RetiredImage>();
for (const image of RETIRED_IMAGES) {
  for (const name of [image.name, ...image.aliases]) retiredByName.set(name, image);
}

/** Returns the catalog's canonical names, in catalog order. */
export function offeredImageNames(): string[] {
  return IMAGES.map((image) => image.name);
}

/**
 * Looks up an image by canonical name or alias. With `arch`, returns the entry
 * only when it is offered for that architecture.
 */
export function findImage(name: string, arch?: Architecture): CatalogImage | undefined {
  const image = imagesByName.get(name);
  if (image === undefined) return undefined;
  if (arch !== undefined && !image.architectures.includes(arch)) return undefined;
  return image;
}

/** Returns the retired release that `name` names, if any. */
export function findRetiredImage(name: string): RetiredImage | undefined {
  return retiredByName.get(name);
}

/** Returns the virtual-machine-only system that `name` names, if any, at any version. */
export function findVirtualMachineSystem(name: string): VirtualMachineSystem | undefined {
  return VIRTUAL_MACHINE_SYSTEMS.find((system) => name === system.prefix || name.startsWith(`${system.prefix}/`));
}

/** Normalizes an architecture name or alias (`amd64`, `aarch64`), or returns undefined. */
export function normalizeArchitecture(value: string): Architecture | undefined {
  switch (value) {
    case 'x86_64':
    case 'amd64':
      return 'x86_64';
    case 'arm64':
    case 'aarch64':
      return 'arm64';
    default:
      return undefined;
  }
}

/**
 * Builds the reason why `name` is not offered, ending with the list of offered
 * images. `name` must not be in the catalog.
 */
export function describeUnavailableImage(name: string): string {
  const offered = `Use one of these images: ${offeredImageNames().join(', ')}.`;
  const quoted = JSON.stringify(name);

  const system = findVirtualMachineSystem(name);
  if (system !== undefined) {
    return (
      `Image ${quoted} cannot run here: Kiln runs builds in Linux containers on AWS Fargate, ` +
      `and ${system.distribution} boots as a virtual machine on build.sr.ht. ${offered}`
    );
  }

  const retiredImage = findRetiredImage(name);
  if (retiredImage !== undefined) {
    return `Image ${quoted} is a release that is no longer supported by its distribution, ${retiredImage.distribution}. ${offered}`;
  }

  return `Image ${quoted} is not in Kiln's image catalog. ${offered}`;
}
