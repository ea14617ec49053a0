export { MAX_MANIFEST_LENGTH, parseManifest } from './parse.js';
export { MAX_ARTIFACTS, MAX_TASK_NAME_LENGTH } from './fields.js';
export {
  type Architecture,
  type CatalogImage,
  DOCKER_PLATFORMS,
  IMAGES,
  type PackageManager,
  RETIRED_IMAGES,
  type RetiredImage,
  VIRTUAL_MACHINE_SYSTEMS,
  type VirtualMachineSystem,
  describeUnavailableImage,
  findImage,
  findRetiredImage,
  findVirtualMachineSystem,
  normalizeArchitecture,
  offeredImageNames,
} from './images.js';
export { type ParsedSource, checkSource, parseSource } from './sources.js';
export { collectTriggers, validateTriggers } from './triggers.js';
export type { Manifest, ManifestTask, Trigger, TriggerCondition } from './types.js';
