import type { EnvironmentValue } from '../runner/protocol.js';

/** A trigger from a manifest or a job request. */
export type Trigger =
  | {
      action: 'email';
      condition: TriggerCondition;
      to: string;
      cc?: string;
      in_reply_to?: string;
    }
  | {
      action: 'webhook';
      condition: TriggerCondition;
      url: string;
    };

/** `failure` covers the states failed, timeout and cancelled. */
export type TriggerCondition = 'success' | 'failure' | 'always';

export interface ManifestTask {
  name: string;
  script: string;
}

/** A validated build manifest with defaults filled in. */
export interface Manifest {
  /** The image as the manifest wrote it, such as `ubuntu/jammy`. */
  image: string;
  /** The catalog's name for the image, such as `ubuntu/22.04`. */
  canonicalImage: string;
  arch: 'x86_64' | 'arm64';
  packages: string[];
  /** Extra package repositories, name to the package manager's source line. */
  repositories: Record<string, string>;
  sources: string[];
  environment: Record<string, EnvironmentValue>;
  /** Secret ids or names. */
  secrets: string[];
  shell: boolean;
  artifacts: string[];
  /** OAuth scopes that the build asks for, space separated, or null. */
  oauth: string | null;
  tasks: ManifestTask[];
  triggers: Trigger[];
}
