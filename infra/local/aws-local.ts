import { once } from 'node:events';
import type { AddressInfo, Server } from 'node:net';
import dynalite from 'dynalite';
import S3rver from 's3rver';

/** Credentials that the local stand-ins accept; s3rver expects exactly these. */
export const LOCAL_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
export const LOCAL_REGION = 'us-east-1';

export interface LocalServer {
  /** Base URL such as `http://127.0.0.1:8082`. */
  endpoint: string;
  close(): Promise<void>;
}

/**
 * Starts dynalite on 127.0.0.1. With `path` the tables persist in LevelDB
 * there; without it they live in memory. Port 0 picks a free port.
 */
export async function startDynalite(options: { port: number; path?: string }): Promise<LocalServer> {
  const server: Server = dynalite({ path: options.path, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  server.listen(options.port, '127.0.0.1');
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([error]) => Promise.reject(error))]);
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Starts s3rver on 127.0.0.1, storing objects under `directory`. Port 0 picks a free port. */
export async function startS3rver(options: { port: number; directory: string }): Promise<LocalServer> {
  const server = new S3rver({ port: options.port, address: '127.0.0.1', silent: true, directory: options.directory });
  const { port } = (await server.run()) as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: async () => {
      await server.close();
    },
  };
}
