import path from 'node:path';

/** A manifest source split into what a clone needs. */
export interface ParsedSource {
  vcs: 'git' | 'hg';
  /** The URL that the VCS tool receives, without the `git+` or `hg+` prefix and without `#ref`. */
  url: string;
  /** Branch, tag, bookmark or commit to check out after the clone, or null for the default. */
  ref: string | null;
  /** Folder under the build's HOME that receives the clone. */
  directory: string;
}

/**
 * Parses a manifest source: `url`, `url#ref`, `dir::url`, `git+https://…`,
 * `hg+https://…`, `git+ssh://…` or scp-like `git@host:path`. Plain URLs are
 * git. The folder is the `dir::` prefix, or else the last path segment of the
 * URL with a trailing `.git` dropped.
 *
 * NOTE: `lib/manifest` is meant to own this function. This copy keeps the
 * runner working until the runner imports it from there.
 */
export function parseSource(source: string): ParsedSource {
  let rest = source.trim();
  let directory: string | null = null;

  // A `dir::` prefix contains no colon, which separates it from a `::` inside
  // a URL such as the IPv6 host of `https://[::1]/repo`.
  const prefixMatch = /^([^:]+)::(.+)$/s.exec(rest);
  if (prefixMatch) {
    directory = prefixMatch[1];
    rest = prefixMatch[2];
  }

  let ref: string | null = null;
  const hashIndex = rest.indexOf('#');
  if (hashIndex !== -1) {
    ref = rest.slice(hashIndex + 1);
    rest = rest.slice(0, hashIndex);
    if (ref === '') {
      ref = null;
    }
  }

  let vcs: 'git' | 'hg' = 'git';
  if (rest.startsWith('git+')) {
    rest = rest.slice('git+'.length);
  } else if (rest.startsWith('hg+')) {
    vcs = 'hg';
    rest = rest.slice('hg+'.length);
  }

  return { vcs, url: rest, ref, directory: directory ?? directoryFromUrl(rest) };
}

/** Returns the last path segment of a URL, scp-like address or path, without a trailing `.git`. */
function directoryFromUrl(url: string): string {
  let pathPart = url;
  const schemeMatch = /^[a-z][a-z0-9+.-]*:\/\/[^/]*(.*)$/i.exec(url);
  if (schemeMatch) {
    pathPart = schemeMatch[1];
  } else {
    // scp-like `user@host:path`: the path starts after the first colon.
    const scpMatch = /^[^/:]+:(.*)$/s.exec(url);
    if (scpMatch) {
      pathPart = scpMatch[1];
    }
  }
  pathPart = pathPart.replace(/[?].*$/s, '');
  const segments = pathPart.split('/').filter((segment) => segment !== '');
  const last = segments.at(-1) ?? '';
  return last.endsWith('.git') ? last.slice(0, -'.git'.length) : last;
}

/**
 * Returns why a source cannot be cloned safely into the build's HOME, or null
 * when it can. The clone must stay inside HOME, and a URL or ref that starts
 * with `-` would be read as an option by git or hg.
 */
export function checkParsedSource(source: ParsedSource): string | null {
  if (source.url === '') {
    return 'the source has no URL';
  }
  if (source.url.startsWith('-')) {
    return `the URL ${JSON.stringify(source.url)} starts with "-"`;
  }
  if (source.ref !== null && source.ref.startsWith('-')) {
    return `the ref ${JSON.stringify(source.ref)} starts with "-"`;
  }
  if (source.directory === '' || source.directory === '.') {
    return `no folder name can be derived from ${JSON.stringify(source.url)}; write it as "folder::url"`;
  }
  if (path.isAbsolute(source.directory) || source.directory.split('/').includes('..')) {
    return `the folder ${JSON.stringify(source.directory)} is outside the build's HOME`;
  }
  return null;
}

/** Returns the argument lists of the commands that clone one source and check out its ref. */
export function cloneCommands(source: ParsedSource): string[][] {
  if (source.vcs === 'hg') {
    const commands = [['hg', 'clone', '--noninteractive', '--', source.url, source.directory]];
    if (source.ref !== null) {
      commands.push(['hg', '--cwd', source.directory, 'update', '--noninteractive', '--', source.ref]);
    }
    return commands;
  }

  const commands = [['git', 'clone', '--recursive', '--', source.url, source.directory]];
  if (source.ref !== null) {
    // The trailing `--` makes git read the ref as a revision, never a path.
    // Checking out a remote branch by its short name creates the local branch.
    commands.push(['git', '-C', source.directory, 'checkout', '-q', source.ref, '--']);
    commands.push(['git', '-C', source.directory, 'submodule', 'update', '--init', '--recursive']);
  }
  return commands;
}
