import path from 'node:path';
import type { ParsedSource } from '../manifest/sources.js';

/**
 * Returns why a source cannot be cloned safely into the build's HOME, or null
 * when it can. The clone must stay inside HOME, and a URL or ref that starts
 * with `-` would be read as an option by git or hg. `parseSource` in
 * lib/manifest already rejects these, and the runner checks again in case a
 * source reaches it without that validation.
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

/** Replaces the password in a URL's user info with `***`, because the setup log is shown to readers of the job. */
export function hideUrlPassword(text: string): string {
  return text.replace(/(\/\/[^/@:\s]*:)[^/@\s]*@/g, '$1***@');
}
