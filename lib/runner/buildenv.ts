import type { ClaimedJob, EnvironmentValue } from './protocol.js';

/** Characters that bash never treats specially inside a word, so a value made only of them needs no quotes. */
const SAFE_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/;

/**
 * Quotes a string as one bash word that expands to exactly the same bytes.
 * Single quotes keep newlines, `$`, backticks and backslashes literal, and a
 * single quote inside the value becomes `'\''`.
 */
export function quoteShellWord(value: string): string {
  if (SAFE_WORD.test(value)) {
    return value;
  }
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

function scalarText(value: string | number | boolean | null): string {
  if (value === null) {
    return '';
  }
  if (typeof value === 'boolean') {
    return value ? 'true' : 'false';
  }
  return String(value);
}

/** Result of {@link renderBuildenv}: the file's text and the variables whose NUL bytes were dropped. */
export interface RenderedBuildenv {
  text: string;
  droppedNulIn: string[];
}

/**
 * Renders `~/.buildenv`: the CI variables, then the manifest's environment in
 * its order. Lists become bash arrays, which bash can declare but not pass to
 * child processes, so only scripts that source the file see them. Bash
 * strings cannot contain NUL, so NUL bytes are dropped and reported.
 * Variable names are not checked here because the manifest validation has
 * already checked them.
 */
export function renderBuildenv(job: Pick<ClaimedJob, 'id' | 'url' | 'environment'>): RenderedBuildenv {
  const droppedNulIn: string[] = [];
  const word = (name: string, value: string | number | boolean | null): string => {
    const text = scalarText(value);
    if (text.includes('\0')) {
      if (!droppedNulIn.includes(name)) {
        droppedNulIn.push(name);
      }
      return quoteShellWord(text.replaceAll('\0', ''));
    }
    return quoteShellWord(text);
  };

  const lines = [
    'export CI=true',
    'export CI_NAME=kiln',
    `export JOB_ID=${job.id}`,
    `export JOB_URL=${quoteShellWord(job.url)}`,
  ];
  for (const [name, value] of Object.entries(job.environment)) {
    lines.push(`export ${name}=${renderValue(name, value, word)}`);
  }
  return { text: `${lines.join('\n')}\n`, droppedNulIn };
}

function renderValue(
  name: string,
  value: EnvironmentValue,
  word: (name: string, value: string | number | boolean | null) => string,
): string {
  if (Array.isArray(value)) {
    return `(${value.map((item) => word(name, item)).join(' ')})`;
  }
  return word(name, value);
}
