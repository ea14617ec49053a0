import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { createInterface } from 'node:readline';

/** An `hg serve` of one repository on 127.0.0.1, for clones over http://. */
export interface HgServer {
  /** The repository's URL, such as `http://127.0.0.1:40123/project`. A manifest clones it as `hg+<url>`. */
  url: string;
  close(): Promise<void>;
}

/**
 * Starts `hg serve` for `repository` on 127.0.0.1. Port 0 lets the server
 * pick a free port, which it prints. The repository is served under its
 * folder name, so the URL's last segment gives the clone its folder.
 */
export async function startHgServe(repository: string): Promise<HgServer> {
  const prefix = path.basename(repository);
  const child = spawn('hg', ['serve', '-R', repository, '-a', '127.0.0.1', '-p', '0', '--prefix', prefix], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => {
    stderr += text;
  });

  const port = await new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      // hg 6.3 prints: listening at http://localhost:42175/prefix/ (bound to 127.0.0.1:42175)
      const match = /bound to 127\.0\.0\.1:(\d+)/.exec(line);
      if (match) {
        resolve(Number(match[1]));
      }
    });
    child.once('exit', (code) => reject(new Error(`hg serve exited with code ${code} before listening: ${stderr}`)));
  });

  return {
    url: `http://127.0.0.1:${port}/${prefix}`,
    close: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
    },
  };
}
