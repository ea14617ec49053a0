#!/usr/bin/env node
// Runs the TypeScript CLI through tsx, so the CLI needs no build step.
import { register } from 'tsx/esm/api';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
register();
const { main } = await import('../lib/cli/main.ts');
await main();
