/**
 * Masking of secret values in build logs. A log's raw output passes through
 * a {@link SecretMasker} before the UTF-8 sanitizer and the size cap, so a
 * secret is found in the bytes that the build printed, even when they are
 * not valid UTF-8, and the cap counts the masked text.
 */

/** The text that replaces each run of secret bytes in a log. */
export const MASK = '[masked]';
const MASK_BYTES = Buffer.from(MASK, 'latin1');

/**
 * Values and lines shorter than this many bytes are not masked. Masking a
 * short line such as `}` or `end` would hide the same text everywhere in the
 * log, and such a line reveals little of the secret.
 */
export const MIN_MASKED_BYTES = 4;

const EDGE_WHITESPACE = /^[ \t\r\n]+|[ \t\r\n]+$/g;

/**
 * Returns the byte strings to mask for the given secret values: each value
 * and each of its lines, without surrounding whitespace, of at least
 * {@link MIN_MASKED_BYTES} bytes. Whitespace is left out because it hides
 * nothing, and masking a trailing newline would join the next log line to
 * the mask. A line that contains `'` is also masked as bash's `set -x` trace
 * prints it, with each `'` written as `'\''`.
 *
 * NOTE: text that the build transforms (base64, hex, `set -x` output in
 * `$'…'` quoting for values with control characters such as tabs) is not
 * recognized.
 */
export function secretPatterns(values: readonly Buffer[]): Buffer[] {
  // latin1 maps each byte to one character and back, so strings work on raw bytes here.
  const patterns = new Set<string>();
  const add = (text: string): void => {
    if (text.length >= MIN_MASKED_BYTES) {
      patterns.add(text);
    }
  };
  for (const value of values) {
    const text = value.toString('latin1');
    add(text.replace(EDGE_WHITESPACE, ''));
    for (const rawLine of text.split('\n')) {
      const line = rawLine.replace(EDGE_WHITESPACE, '');
      add(line);
      if (line.includes("'")) {
        add(line.replaceAll("'", "'\\''"));
      }
    }
  }
  return [...patterns].map((pattern) => Buffer.from(pattern, 'latin1'));
}

/** Number of states, shallowest first, whose transitions get a full table of 256 entries: at most 4 MiB. */
const MAX_TABLE_STATES = 4096;

/**
 * An Aho-Corasick automaton over byte strings. States are numbered in
 * breadth-first order, so the shallowest ones, where ordinary output spends
 * nearly all its time, come first and have full transition tables. Deeper
 * states store their few edges in flat arrays and fall back along failure
 * links, so memory stays proportional to the patterns' total length.
 */
export class SecretMatcher {
  /** Length in bytes of the longest pattern, or 0 when there is none. */
  readonly maxLength: number;
  /** States below this number have a row in {@link table}. State 0 is the root. */
  readonly tableStates: number;
  /** Complete transitions of the first {@link tableStates} states, 256 per state, with failure links already followed. */
  readonly table: Int32Array;
  /** Length of the longest pattern that ends at a state, or 0. */
  readonly matchLength: Int32Array;
  /** Edges of state `s` are the indexes `edgeStart[s]` to `edgeStart[s + 1] - 1`. */
  private readonly edgeStart: Int32Array;
  private readonly edgeBytes: Uint8Array;
  private readonly edgeTargets: Int32Array;
  /** The state of the longest proper suffix of a state's string that is also a trie state. */
  private readonly failure: Int32Array;

  /** @param maxTableStates How many states get a full table; tests lower it to cover the edge lists. */
  constructor(patterns: readonly Buffer[], maxTableStates = MAX_TABLE_STATES) {
    const trie = buildTrie(patterns);
    this.maxLength = trie.maxLength;
    const count = trie.children.length;
    // Renumbers the trie's states in breadth-first order.
    const order: number[] = [0];
    for (let index = 0; index < order.length; index += 1) {
      order.push(...trie.children[order[index]].values());
    }
    const number = new Int32Array(count);
    order.forEach((state, position) => (number[state] = position));
    const children = order.map((state) => new Map([...trie.children[state]].map(([byte, child]) => [byte, number[child]])));

    this.failure = new Int32Array(count);
    this.matchLength = new Int32Array(count);
    // In breadth-first order a state's failure link is set after those of all shorter strings.
    for (let state = 0; state < count; state += 1) {
      for (const [byte, child] of children[state]) {
        this.failure[child] = state === 0 ? 0 : this.follow(children, this.failure[state], byte);
        this.matchLength[child] = Math.max(trie.patternLength[order[child]], this.matchLength[this.failure[child]]);
      }
    }

    this.edgeStart = new Int32Array(count + 1);
    const edgeCount = children.reduce((sum, edges) => sum + edges.size, 0);
    this.edgeBytes = new Uint8Array(edgeCount);
    this.edgeTargets = new Int32Array(edgeCount);
    let edge = 0;
    for (let state = 0; state < count; state += 1) {
      this.edgeStart[state] = edge;
      for (const [byte, child] of children[state]) {
        this.edgeBytes[edge] = byte;
        this.edgeTargets[edge] = child;
        edge += 1;
      }
    }
    this.edgeStart[count] = edge;

    // A state's failure link has a smaller number, so its row exists and is the base of the state's row.
    this.tableStates = Math.max(1, Math.min(count, maxTableStates));
    this.table = new Int32Array(this.tableStates * 256);
    for (let state = 0; state < this.tableStates; state += 1) {
      if (state !== 0) {
        const fallback = this.failure[state] * 256;
        this.table.copyWithin(state * 256, fallback, fallback + 256);
      }
      for (const [byte, child] of children[state]) {
        this.table[state * 256 + byte] = child;
      }
    }
  }

  /** Returns the state after `state` reads `byte`, for states without a table row. */
  next(state: number, byte: number): number {
    for (let current = state; ; current = this.failure[current]) {
      if (current < this.tableStates) {
        return this.table[current * 256 + byte];
      }
      for (let edge = this.edgeStart[current], stop = this.edgeStart[current + 1]; edge < stop; edge += 1) {
        if (this.edgeBytes[edge] === byte) {
          return this.edgeTargets[edge];
        }
      }
    }
  }

  /** Returns the trie state reached from `state` by `byte`, following failure links, during construction. */
  private follow(children: Array<Map<number, number>>, state: number, byte: number): number {
    for (let current = state; ; current = this.failure[current]) {
      const next = children[current].get(byte);
      if (next !== undefined) {
        return next;
      }
      if (current === 0) {
        return 0;
      }
    }
  }
}

/** Builds a trie of the patterns: each state's edges, and the length of the pattern that ends at the state, or 0. */
function buildTrie(patterns: readonly Buffer[]): { children: Array<Map<number, number>>; patternLength: number[]; maxLength: number } {
  const children: Array<Map<number, number>> = [new Map()];
  const patternLength: number[] = [0];
  let maxLength = 0;
  for (const pattern of patterns) {
    if (pattern.length === 0) {
      continue;
    }
    let state = 0;
    for (const byte of pattern) {
      let next = children[state].get(byte);
      if (next === undefined) {
        next = children.length;
        children.push(new Map());
        patternLength.push(0);
        children[state].set(byte, next);
      }
      state = next;
    }
    patternLength[state] = pattern.length;
    maxLength = Math.max(maxLength, pattern.length);
  }
  return { children, patternLength, maxLength };
}

/** A run of masked bytes at stream offsets `start` to `end - 1`. */
interface Span {
  start: number;
  end: number;
  /** Whether the mask text has been written for this span, which happens once it starts to be emitted. */
  marked: boolean;
}

const EMPTY = Buffer.alloc(0);

/**
 * Replaces every occurrence of a matcher's patterns in a byte stream with
 * {@link MASK}. Occurrences that overlap or touch become one mask. A
 * secret may be split across any number of chunks, so `push` holds back the
 * last `maxLength - 1` bytes, which a later chunk may still turn into part
 * of a match, and {@link end} releases them.
 */
export class SecretMasker {
  private state = 0;
  /** Bytes not yet emitted, which start at the stream offset {@link heldStart}. */
  private held: Buffer = EMPTY;
  private heldStart = 0;
  /** Masked runs that are not fully emitted yet, sorted and disjoint. */
  private readonly spans: Span[] = [];
  /** Stream offset where the last fully emitted span ended, so a match that touches it adds no second mask. */
  private emittedSpanEnd = -1;

  constructor(private readonly matcher: SecretMatcher) {}

  /** Returns the masked output that the chunk completes, which may be empty. */
  push(chunk: Buffer): Buffer {
    const chunkStart = this.heldStart + this.held.length;
    this.scan(chunk, chunkStart);
    const window = this.held.length === 0 ? chunk : Buffer.concat([this.held, chunk]);
    const holdBack = Math.max(0, this.matcher.maxLength - 1);
    const emitEnd = Math.max(this.heldStart, chunkStart + chunk.length - holdBack);
    const output = this.render(window, emitEnd);
    // A copy, so the caller's chunk can be reused and a large chunk is not kept alive.
    this.held = Buffer.from(window.subarray(emitEnd - this.heldStart));
    this.heldStart = emitEnd;
    return output;
  }

  /** Returns the masked rest of the stream and resets the state, so the next push starts a new stream. */
  end(): Buffer {
    const output = this.render(this.held, this.heldStart + this.held.length);
    this.heldStart += this.held.length;
    this.held = EMPTY;
    this.state = 0;
    this.emittedSpanEnd = -1;
    return output;
  }

  /** Masks one complete piece of text, such as a line that the runner writes itself. */
  mask(bytes: Buffer): Buffer {
    const head = this.push(bytes);
    const tail = this.end();
    return head.length === 0 ? tail : Buffer.concat([head, tail]);
  }

  /** Runs the automaton over a chunk and records a span for each match. */
  private scan(chunk: Buffer, chunkStart: number): void {
    const matcher = this.matcher;
    const { tableStates, table, matchLength } = matcher;
    let state = this.state;
    for (let index = 0; index < chunk.length; index += 1) {
      const byte = chunk[index];
      state = state < tableStates ? table[(state << 8) | byte] : matcher.next(state, byte);
      const length = matchLength[state];
      if (length !== 0) {
        const end = chunkStart + index + 1;
        this.addSpan(end - length, end);
      }
    }
    this.state = state;
  }

  /** Adds a match. Matches arrive in order of their end, so only the last spans can overlap it. */
  private addSpan(start: number, end: number): void {
    let merged: Span = { start, end, marked: start === this.emittedSpanEnd };
    for (let last = this.spans.at(-1); last !== undefined && last.end >= merged.start; last = this.spans.at(-1)) {
      this.spans.pop();
      merged = { start: Math.min(last.start, merged.start), end: Math.max(last.end, merged.end), marked: last.marked || merged.marked };
    }
    this.spans.push(merged);
  }

  /** Returns the window's bytes up to the stream offset `emitEnd`, with masked spans replaced. */
  private render(window: Buffer, emitEnd: number): Buffer {
    const windowStart = this.heldStart;
    if (this.spans.length === 0 || this.spans[0].start >= emitEnd) {
      return window.subarray(0, emitEnd - windowStart);
    }

    const parts: Buffer[] = [];
    let position = windowStart;
    while (this.spans.length > 0 && this.spans[0].start < emitEnd) {
      const span = this.spans[0];
      if (span.start > position) {
        parts.push(window.subarray(position - windowStart, span.start - windowStart));
      }
      if (!span.marked) {
        parts.push(MASK_BYTES);
        span.marked = true;
      }
      if (span.end > emitEnd) {
        // The span continues past what can be emitted now, and its mask text is already out.
        position = emitEnd;
        break;
      }
      position = span.end;
      this.emittedSpanEnd = span.end;
      this.spans.shift();
    }
    if (position < emitEnd) {
      parts.push(window.subarray(position - windowStart, emitEnd - windowStart));
    }
    return Buffer.concat(parts);
  }
}
