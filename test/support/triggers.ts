import { setTimeout as sleep } from 'node:timers/promises';
import type { TestStack } from './local-stack.js';

/** Builds a manifest with the given tasks (name to script) and triggers. */
export function manifestWithTriggers(tasks: Record<string, string>, triggers: Array<Record<string, string>>): string {
  const lines = ['image: alpine/latest', 'tasks:'];
  for (const [name, script] of Object.entries(tasks)) lines.push(`  - ${name}: ${JSON.stringify(script)}`);
  if (triggers.length > 0) {
    lines.push('triggers:');
    for (const trigger of triggers) {
      const [first, ...rest] = Object.entries(trigger);
      lines.push(`  - ${first[0]}: ${JSON.stringify(first[1])}`);
      for (const [key, value] of rest) lines.push(`    ${key}: ${JSON.stringify(value)}`);
    }
  }

  return `${lines.join('\n')}\n`;
}

/** Reads a job's setup log through the redirect route; empty while there is none. */
export async function readSetupLog(stack: TestStack, jobId: number): Promise<string> {
  const redirect = await stack.api('GET', `/api/jobs/${jobId}/log`);
  if (redirect.status !== 302) return '';

  const response = await fetch(redirect.headers.get('location')!);
  return response.status === 200 ? response.text() : '';
}

/** Polls a job's setup log until `pattern` matches `count` lines; fails after `timeoutMs` with the log. */
export async function waitForSetupLog(stack: TestStack, jobId: number, pattern: RegExp, count = 1, timeoutMs = 30_000): Promise<string> {
  const giveUpAt = Date.now() + timeoutMs;
  for (;;) {
    const log = await readSetupLog(stack, jobId);
    const matches = log.split('\n').filter((line) => pattern.test(line)).length;
    if (matches >= count) return log;
    if (Date.now() > giveUpAt) throw new Error(`setup log of job ${jobId} has ${matches} lines matching ${pattern}, expected ${count}:\n${log}`);
    await sleep(200);
  }
}
