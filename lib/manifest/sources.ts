import { ValidationError } from '../errors.js';

/**
 * A manifest source split for the runner. `url`, `ref` and `directory` may
 * contain characters that a shell interprets (`$`, `;`, quotes), because git
 * allows them in names: pass them to git or hg as separate arguments, never
 * inside a shell command line.
 */
export interface ParsedSource {
  vcs: 'git' | 'hg';
  /** The URL to clone, without the `git+`/`hg+` prefix, the `dir::` prefix and the `#ref`. */
  url: string;
  /** The branch, tag or commit after `#`, or null for the default branch. */
  ref: string | null;
  /** The folder to clone into, under the build user's home. */
  directory: string;
}

/** The URL schemes build.sr.ht clones from, and the version control system of each. */
const SCHEMES: Readonly<Record<string, ParsedSource['vcs']>> = {
  https: 'git',
  http: 'git',
  git: 'git',
  ssh: 'git',
  'git+https': 'git',
  'git+http': 'git',
  'git+ssh': 'git',
  'hg+https': 'hg',
  'hg+http': 'hg',
  'hg+ssh': 'hg',
};

const FORMS =
  'Write it as https://host/path, http://, git://, ssh://, git+https://, git+ssh://, hg+https:// or hg+http:// ' +
  'followed by host and path, or as user@host:path, optionally followed by #branch, #tag or #commit and preceded by folder::.';

const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;
const WHITESPACE = /\s/;
const SCHEME_URL = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/s;
const SCP_LIKE = /^([^@/:]+)@([^@/:]+):(.+)$/s;
const HOST_NAME = /^[A-Za-z0-9.-]+$/;

type Checked = { ok: true; source: ParsedSource } | { ok: false; reason: string };

/**
 * Splits a manifest source into version control system, URL, ref and folder.
 * The folder is the `dir::` prefix, else the URL's last path segment without
 * a trailing `.git`.
 *
 * @throws ValidationError on `field` when the source is not in a form that
 *   build.sr.ht accepts, or when a part could be read by git as an option.
 */
export function parseSource(source: string, field = 'sources'): ParsedSource {
  const checked = checkSource(source);
  if (!checked.ok) throw ValidationError.of(field, checked.reason);
  return checked.source;
}

/** Parses a source like {@link parseSource}, returning the reason instead of throwing. */
export function checkSource(source: string): Checked {
  const quoted = JSON.stringify(source);
  if (source === '') return { ok: false, reason: `The source is an empty string. ${FORMS}` };

  const badIndex = [...source].findIndex((character) => WHITESPACE.test(character) || CONTROL_CHARACTER.test(character));
  if (badIndex >= 0) {
    return {
      ok: false,
      reason: `Source ${quoted} contains whitespace or a control character at character ${badIndex + 1}. Remove it, and encode a space in a URL as %20.`,
    };
  }

  let rest = source;
  let directory: string | null = null;
  const separator = source.indexOf('::');
  if (separator >= 0 && !source.slice(0, separator).includes(':')) {
    directory = source.slice(0, separator);
    rest = source.slice(separator + 2);
    const problem = checkDirectory(directory);
    if (problem !== null) {
      return {
        ok: false,
        reason: `Source ${quoted} has an invalid folder name ${JSON.stringify(directory)} before "::": it ${problem}. Choose another folder name.`,
      };
    }
  }

  if (rest.startsWith('-')) {
    return { ok: false, reason: `Source ${quoted} starts with "-", which git would read as an option. ${FORMS}` };
  }

  let ref: string | null = null;
  const hash = rest.indexOf('#');
  if (hash >= 0) {
    ref = rest.slice(hash + 1);
    rest = rest.slice(0, hash);
    const problem = checkRef(ref);
    if (problem !== null) {
      return {
        ok: false,
        reason: `Source ${quoted} has an invalid ref ${JSON.stringify(ref)} after "#": it ${problem}. Name a branch, tag or commit after "#".`,
      };
    }
  }

  const parsed = parseLocation(rest);
  if (!parsed.ok) return { ok: false, reason: `Source ${quoted} ${parsed.reason}` };

  if (directory === null) {
    directory = defaultDirectory(parsed.path);
    const problem = checkDirectory(directory);
    if (problem !== null) {
      return {
        ok: false,
        reason: `Source ${quoted} gives no usable folder name, because its last path segment ${JSON.stringify(directory)} ${problem}. Prefix the source with a folder name, as in name::${source}.`,
      };
    }
  }

  return { ok: true, source: { vcs: parsed.vcs, url: parsed.url, ref, directory } };
}

type Location = { ok: true; vcs: ParsedSource['vcs']; url: string; path: string } | { ok: false; reason: string };

function parseLocation(location: string): Location {
  const schemeMatch = SCHEME_URL.exec(location);
  if (schemeMatch !== null) {
    const [, rawScheme = '', authority = '', path = ''] = schemeMatch;
    const scheme = rawScheme.toLowerCase();
    const vcs = SCHEMES[scheme];
    if (vcs === undefined) return {
      ok: false,
      reason: `uses the scheme ${JSON.stringify(rawScheme)}, which Kiln cannot clone from. ${FORMS}`,
    };

    let url: URL;
    try {
      url = new URL(location);
    } catch {
      return { ok: false, reason: `is not a valid URL. ${FORMS}` };
    }
    const at = authority.lastIndexOf('@');
    const user = at >= 0 ? authority.slice(0, at) : '';
    const host = authority.slice(at + 1);
    if (url.host === '' || host === '') return { ok: false, reason: `has no host name. ${FORMS}` };
    if (startsWithDash(host) || startsWithDash(user)) {
      return {
        ok: false,
        reason: 'has a user or host name that starts with "-", which ssh would read as an option. Fix the URL.',
      };
    }
    const plusIndex = rawScheme.indexOf('+');
    const cloneUrl = plusIndex >= 0 ? location.slice(plusIndex + 1) : location;
    return { ok: true, vcs, url: cloneUrl, path: path.replace(/\?.*$/s, '') };
  }

  const scpMatch = SCP_LIKE.exec(location);
  if (scpMatch !== null) {
    const [, user = '', host = '', path = ''] = scpMatch;
    if (user.startsWith('-') || host.startsWith('-') || path.startsWith('-')) {
      return {
        ok: false,
        reason: 'has a user, host or path that starts with "-", which ssh would read as an option. Fix the address.',
      };
    }
    if (!HOST_NAME.test(host)) return {
      ok: false,
      reason: `has the host name ${JSON.stringify(host)}, which is not a valid host name. Fix the address.`,
    };
    return { ok: true, vcs: 'git', url: location, path };
  }

  return { ok: false, reason: `is not a URL that Kiln can clone. ${FORMS}` };
}

/** Tells whether `value` starts with "-", written plainly or percent-encoded as %2D. */
function startsWithDash(value: string): boolean {
  return value.startsWith('-') || value.toLowerCase().startsWith('%2d');
}

function defaultDirectory(path: string): string {
  const segments = path.replace(/\/+$/, '').split('/');
  const last = segments[segments.length - 1] ?? '';
  return last.endsWith('.git') ? last.slice(0, -'.git'.length) : last;
}

/** Returns why `name` cannot be a folder under the home directory, or null. */
function checkDirectory(name: string): string | null {
  if (name === '') return 'is empty';
  if (name === '.' || name === '..') return 'would point outside a folder of its own';
  if (name.includes('/') || name.includes('\\')) return 'contains a slash';
  if (name.startsWith('-')) return 'starts with "-", which git would read as an option';
  return null;
}

/** Returns why `ref` breaks git's rules for branch and tag names (git check-ref-format), or null. */
function checkRef(ref: string): string | null {
  if (ref === '') return 'is empty';
  if (ref.startsWith('-')) return 'starts with "-", which git would read as an option';
  if (/[~^:?*[\\]/.test(ref)) return 'contains one of the characters ~ ^ : ? * [ \\ that git does not allow in names';
  if (ref.includes('..') || ref.includes('@{') || ref === '@') return 'contains "..", "@{" or is "@", which git does not allow';
  if (ref.startsWith('/') || ref.endsWith('/') || ref.includes('//')) return 'has an empty path component';
  if (ref.endsWith('.') || ref.endsWith('.lock') || ref.split('/').some((part) => part.startsWith('.'))) {
    return 'ends with "." or ".lock", or has a component that starts with "."';
  }
  return null;
}
