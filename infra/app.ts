/**
 * The CDK app that `cdk deploy` runs (see cdk.json). The account and region
 * come from the CDK CLI's environment or from the `account` and `region`
 * context values. Without either, the stack is environment-agnostic, so
 * `cdk synth` needs no AWS credentials.
 */
import { createKilnApp } from './kiln-stack.js';

createKilnApp().app.synth();
