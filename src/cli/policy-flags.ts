/** Flags and helpers shared by the `seng rules …` commands. */
import { Args, Errors, Flags } from '@oclif/core';
import { nftNameProblem } from '../nft/names.js';

export const policyArg = {
  file: Args.string({ description: 'Policy file (YAML or JSON; see rules/README.md).', required: true }),
};

/** An nftables table name, refused at parse time when nft must not see it (a usage error). */
export const tableFlag = Flags.custom<string>({
  parse: async (input) => {
    const problem = nftNameProblem('table', input);
    if (problem) throw new Errors.CLIError(problem, { exit: 2 });
    return input;
  },
});

export const policyFlags = {
  db: Flags.string({
    char: 'd',
    summary:
      'Policy store (SQLite file or postgres:// URL) to resolve app names in (not needed for 64-hex measurements).',
    env: 'SENG_DB',
  }),
  table: tableFlag({ summary: "nftables table (overrides the policy's `table:`)." }),
};
