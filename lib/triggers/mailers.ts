import { SendEmailCommand, type SendEmailCommandInput, type SESv2Client } from '@aws-sdk/client-sesv2';
import { randomBytes } from 'node:crypto';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { checkEmail, renderEmail, type TriggerEmail } from './email.js';

/** Sends trigger emails; each call is one attempt and throws when the message was not accepted. */
export interface Mailer {
  /** Sends the email and returns a short description of where it went, for the setup log. */
  send(email: TriggerEmail): Promise<string>;
}

/**
 * Writes each email as an .eml file into a folder, for the local stack
 * without an SMTP server. A file appears whole: it is written under a
 * temporary name and then renamed.
 */
export class EmlFolderMailer implements Mailer {
  constructor(private readonly folder: string) {}

  async send(email: TriggerEmail): Promise<string> {
    const raw = await renderEmail(email);
    await mkdir(this.folder, { recursive: true });
    const name = `${email.date.getTime()}-${randomBytes(4).toString('hex')}.eml`;
    const file = path.join(this.folder, name);
    const partial = path.join(this.folder, `.${name}.partial`);
    await writeFile(partial, raw, { flag: 'wx' });
    await rename(partial, file);

    return `written to ${file}`;
  }
}

/** Sends through an SMTP server named by a URL such as `smtp://user:password@host:587`, with nodemailer. */
export class SmtpMailer implements Mailer {
  private readonly transport: ReturnType<typeof nodemailer.createTransport>;
  private readonly server: string;

  constructor(url: string) {
    this.transport = nodemailer.createTransport(url);
    const parsed = new URL(url);
    this.server = parsed.host;
  }

  async send(email: TriggerEmail): Promise<string> {
    const envelope = checkEmail(email);
    const raw = await renderEmail(email);
    const info = await this.transport.sendMail({ envelope: { from: envelope.from, to: [...envelope.to, ...envelope.cc] }, raw });

    return `sent through SMTP server ${this.server}: ${String(info.response ?? 'accepted')}`;
  }

  close(): void {
    this.transport.close();
  }
}

/** Builds the SESv2 SendEmail input for an email: the raw message and its envelope. */
export async function sesSendEmailInput(email: TriggerEmail): Promise<SendEmailCommandInput> {
  const envelope = checkEmail(email);
  const raw = await renderEmail(email);

  return {
    FromEmailAddress: envelope.from,
    Destination: {
      ToAddresses: envelope.to,
      ...(envelope.cc.length > 0 ? { CcAddresses: envelope.cc } : {}),
    },
    Content: { Raw: { Data: raw } },
  };
}

/** Sends through Amazon SES (API v2) as a raw message, so that In-Reply-To and References go along. */
export class SesMailer implements Mailer {
  constructor(private readonly ses: SESv2Client) {}

  async send(email: TriggerEmail): Promise<string> {
    const result = await this.ses.send(new SendEmailCommand(await sesSendEmailInput(email)));

    return `sent through Amazon SES, message id ${result.MessageId ?? 'unknown'}`;
  }
}
