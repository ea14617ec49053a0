import path from 'node:path';

/** A path resolved against the build's HOME, or the reason it was rejected. */
export type ResolvedBuildPath = { ok: true; path: string } | { ok: false; reason: string };

/**
 * Resolves a path that a manifest or a secret names. `~/x` and a relative
 * `x` are under the build's HOME, the tasks' working folder, and an absolute
 * path stays as it is. A path outside HOME is rejected unless
 * `allowOutsideHome` is set, as it is for a runner in a container of its own.
 */
export function resolveBuildPath(requested: string, home: string, allowOutsideHome: boolean): ResolvedBuildPath {
  if (requested === '' || requested === '~') {
    return { ok: false, reason: 'the path is empty or names HOME itself' };
  }
  if (requested.includes('\0')) {
    return { ok: false, reason: 'the path contains a NUL byte' };
  }
  if (requested.startsWith('~') && !requested.startsWith('~/')) {
    return { ok: false, reason: 'the path starts with ~user/, which is not supported. Write it as ~/… or as an absolute path' };
  }

  const resolved = requested.startsWith('~/') ? path.resolve(home, requested.slice(2)) : path.resolve(home, requested);
  if (resolved === home) {
    return { ok: false, reason: 'the path names HOME itself' };
  }
  if (!allowOutsideHome && !isInside(resolved, home)) {
    return {
      ok: false,
      reason: `the path is outside the build's HOME ${home}, and the local runner only uses paths under HOME. Write it as ~/…`,
    };
  }
  return { ok: true, path: resolved };
}

/** Returns `~/…` for a path under `home`, for log lines, and the path itself otherwise. */
export function displayPath(absolute: string, home: string): string {
  return isInside(absolute, home) ? `~/${path.relative(home, absolute)}` : absolute;
}

function isInside(target: string, folder: string): boolean {
  return target.startsWith(`${folder}${path.sep}`);
}
