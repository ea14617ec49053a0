import addressparser from 'nodemailer/lib/addressparser';
import MailComposer from 'nodemailer/lib/mail-composer';
import type { ServiceContext } from '../context.js';
import { KilnError } from '../errors.js';
import { jobUrl } from '../jobs/runner-session.js';
import type { GroupRecord, JobRecord } from '../store/index.js';
import { setupLogLink, taskLogLink } from './payload.js';

/** An email that a trigger sends; each mailer turns it into the same RFC 5322 message. */
export interface TriggerEmail {
  from: string;
  /** Recipients as the trigger wrote them, such as `Alice <alice@example.org>, bob@example.org`. */
  to: string;
  cc: string | null;
  /** Message-ID of the message this one replies to, with or without angle brackets. */
  inReplyTo: string | null;
  subject: string;
  text: string;
  /** The same for every send of one trigger, so that mail clients can drop a duplicate. */
  messageId: string;
  date: Date;
}

/** An email that must not be sent, such as one with a line break in a header value. */
export class EmailRejectedError extends KilnError {
  override name = 'EmailRejectedError';
}

/** The SMTP envelope of an email: bare addresses only. */
export interface Envelope {
  from: string;
  to: string[];
  cc: string[];
}

/** Control characters, CR and LF included, which would start a new header line. */
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

function checkHeaderValue(field: string, value: string): void {
  if (CONTROL_CHARACTER.test(value)) {
    throw new EmailRejectedError(`the ${field} header value ${JSON.stringify(value.slice(0, 80))} contains a line break or another control character`);
  }
}

function parseAddresses(field: string, value: string): string[] {
  const addresses = addressparser(value, { flatten: true })
    .map((entry) => entry.address)
    .filter((address) => address !== '');
  const invalid = addresses.find((address) => !/^[^\s@<>]+@[^\s@<>]+$/.test(address));
  if (invalid !== undefined) throw new EmailRejectedError(`the ${field} address ${JSON.stringify(invalid)} is not a valid email address`);

  return addresses;
}

/**
 * Checks every header value for control characters, again, because a
 * recipient that slipped past validation would inject headers, and returns
 * the envelope. Throws EmailRejectedError naming the bad value.
 */
export function checkEmail(email: TriggerEmail): Envelope {
  checkHeaderValue('From', email.from);
  checkHeaderValue('To', email.to);
  if (email.cc !== null) checkHeaderValue('Cc', email.cc);
  if (email.inReplyTo !== null) checkHeaderValue('In-Reply-To', email.inReplyTo);
  checkHeaderValue('Subject', email.subject);
  checkHeaderValue('Message-ID', email.messageId);

  const [from] = parseAddresses('From', email.from);
  const to = parseAddresses('To', email.to);
  const cc = email.cc === null ? [] : parseAddresses('Cc', email.cc);
  if (from === undefined) throw new EmailRejectedError(`the From value ${JSON.stringify(email.from)} contains no address`);
  if (to.length === 0) throw new EmailRejectedError(`the To value ${JSON.stringify(email.to)} contains no address`);

  return { from, to, cc };
}

function bracketed(messageId: string): string {
  const trimmed = messageId.trim();

  return trimmed.startsWith('<') ? trimmed : `<${trimmed}>`;
}

/** Renders the email as an RFC 5322 message, UTF-8 text encoded as quoted-printable where needed. */
export async function renderEmail(email: TriggerEmail): Promise<Buffer> {
  checkEmail(email);
  const inReplyTo = email.inReplyTo === null ? undefined : bracketed(email.inReplyTo);
  const composer = new MailComposer({
    from: email.from,
    to: email.to,
    cc: email.cc ?? undefined,
    subject: email.subject,
    text: email.text.replace(/\r?\n/g, '\r\n'),
    messageId: bracketed(email.messageId),
    date: email.date,
    inReplyTo,
    references: inReplyTo,
  });

  return composer.compile().build();
}

/** Builds the Message-ID of one trigger's email: the same on every send, unique per job or group and trigger. */
export function triggerMessageId(context: ServiceContext, scope: string, trigger: string): string {
  const host = new URL(context.publicUrl).hostname.replace(/^\[|\]$/g, '') || 'kiln';
  const local = `kiln.${scope}.${trigger}`.toLowerCase().replace(/[^a-z0-9.-]/g, '-');

  return `<${local}@${host}>`;
}

/** Replaces control characters, so a value can go into a subject line. */
function oneLine(text: string): string {
  return text.replace(new RegExp(CONTROL_CHARACTER.source, 'g'), ' ');
}

function jobName(job: JobRecord): string {
  return [`~${job.owner}`, ...job.tags].join('/');
}

/** Composes the subject and body of a job's email: each task's status and log link, leaving out tasks named `_...`. */
export function composeJobEmail(context: ServiceContext, job: JobRecord): { subject: string; text: string } {
  const hasLogs = job.runner !== null;
  const tasks = job.tasks.filter((task) => !task.name.startsWith('_'));
  const nameWidth = Math.max(0, ...tasks.map((task) => task.name.length));
  const lines = [`Job #${job.id} (${jobName(job)}) ${job.status}.`, ''];
  if (job.note !== null) lines.push(`Note: ${job.note}`, '');
  if (job.failureReason !== null && job.status !== 'success') lines.push(`Reason: ${job.failureReason}`, '');

  if (tasks.length > 0) {
    lines.push('Tasks:');
    for (const task of tasks) {
      const ran = hasLogs && task.status !== 'skipped' && task.status !== 'pending';
      const link = ran ? `  ${taskLogLink(context, job.id, task.name)}` : '';
      lines.push(`  ${task.name.padEnd(nameWidth)}  ${task.status.padEnd(7)}${link}`.trimEnd());
    }
    lines.push('');
  }

  lines.push(hasLogs ? `Setup log: ${setupLogLink(context, job.id)}` : 'Setup log: none, the job never started');
  lines.push(`Job: ${jobUrl(context, job.id)}`, '');
  lines.push('The links need a token that may read the job, and redirect to the log.', '');

  return { subject: oneLine(`[kiln] ${jobName(job)} #${job.id} ${job.status}`), text: lines.join('\n') };
}

/** Composes the subject and body of a job group's email: each job's status and links. */
export function composeGroupEmail(
  context: ServiceContext,
  group: GroupRecord,
  jobs: readonly JobRecord[],
  status: 'success' | 'failed',
): { subject: string; text: string } {
  const failed = jobs.filter((job) => job.status !== 'success').length;
  const summary = status === 'success' ? `all ${jobs.length} jobs succeeded` : `${failed} of ${jobs.length} jobs did not succeed`;
  const lines = [`Job group #${group.id} (~${group.owner}) ${status}: ${summary}.`, ''];
  if (group.note !== null) lines.push(`Note: ${group.note}`, '');

  lines.push('Jobs:');
  for (const job of jobs) {
    lines.push(`  #${job.id} ${job.status.padEnd(9)} ${jobName(job)}`);
    lines.push(`    Job: ${jobUrl(context, job.id)}`);
    if (job.runner !== null) lines.push(`    Setup log: ${setupLogLink(context, job.id)}`);
  }
  lines.push('', 'The links need a token that may read the job, and redirect to the log.', '');

  return { subject: oneLine(`[kiln] ~${group.owner} job group #${group.id} ${status}`), text: lines.join('\n') };
}
