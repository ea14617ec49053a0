import { createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** One message that the sink accepted. */
export interface SunkMessage {
  from: string;
  recipients: string[];
  /** The message as sent after DATA, with the dot-stuffing undone. */
  data: string;
}

/** A minimal SMTP server on 127.0.0.1 that accepts every message, for tests of KILN_SMTP_URL. */
export interface SmtpSink {
  url: string;
  messages: SunkMessage[];
  waitFor(count: number, timeoutMs?: number): Promise<SunkMessage[]>;
  close(): Promise<void>;
}

/** Serves one SMTP session: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP and QUIT, without extensions. */
function serveSession(socket: Socket, messages: SunkMessage[]): void {
  let buffer = '';
  let from = '';
  let recipients: string[] = [];
  let inData = false;
  const reply = (line: string) => socket.write(`${line}\r\n`);

  reply('220 kiln-test-sink ESMTP');
  socket.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    for (;;) {
      if (inData) {
        const end = buffer.indexOf('\r\n.\r\n');
        if (end === -1) return;
        const data = buffer.slice(0, end).replace(/^\.\./gm, '.');
        buffer = buffer.slice(end + 5);
        inData = false;
        messages.push({ from, recipients, data });
        reply('250 2.0.0 queued');
        continue;
      }

      const lineEnd = buffer.indexOf('\r\n');
      if (lineEnd === -1) return;
      const line = buffer.slice(0, lineEnd);
      buffer = buffer.slice(lineEnd + 2);
      const command = line.slice(0, 4).toUpperCase();
      if (command === 'EHLO' || command === 'HELO') {
        reply('250 kiln-test-sink');
      } else if (command === 'MAIL') {
        from = /<(.*)>/.exec(line)?.[1] ?? '';
        recipients = [];
        reply('250 2.1.0 ok');
      } else if (command === 'RCPT') {
        recipients.push(/<(.*)>/.exec(line)?.[1] ?? '');
        reply('250 2.1.5 ok');
      } else if (command === 'DATA') {
        inData = true;
        reply('354 end with <CRLF>.<CRLF>');
      } else if (command === 'QUIT') {
        reply('221 2.0.0 bye');
        socket.end();
        return;
      } else if (command === 'RSET' || command === 'NOOP') {
        reply('250 2.0.0 ok');
      } else {
        reply('502 5.5.2 command not implemented');
      }
    }
  });
  socket.on('error', () => socket.destroy());
}

export async function startSmtpSink(): Promise<SmtpSink> {
  const messages: SunkMessage[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    serveSession(socket, messages);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `smtp://127.0.0.1:${port}`,
    messages,
    waitFor: async (count, timeoutMs = 30_000) => {
      const giveUpAt = Date.now() + timeoutMs;
      while (messages.length < count) {
        if (Date.now() > giveUpAt) throw new Error(`the SMTP sink got ${messages.length} messages, expected ${count}`);
        await sleep(50);
      }
      return messages;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
