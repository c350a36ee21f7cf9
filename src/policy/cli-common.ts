/** Flags and helpers shared by the `seng rules …` commands. */
import { Args, Flags } from '@oclif/core';

export const policyArg = {
  file: Args.string({ description: 'Policy file (YAML or JSON; see rules/README.md).', required: true }),
};

export const policyFlags = {
  db: Flags.string({
    char: 'd',
    summary: 'seng database to resolve app names in (not needed for 64-hex measurements).',
    env: 'SENG_DB',
  }),
  table: Flags.string({ summary: "nftables table (overrides the policy's `table:`)." }),
};
