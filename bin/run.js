#!/usr/bin/env node
// Entry point of the `seng` CLI: oclif discovers the compiled commands under dist/src/cli/commands.
import { execute } from '@oclif/core';

await execute({ dir: import.meta.url });
