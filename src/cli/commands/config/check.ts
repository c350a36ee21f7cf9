import { Args } from '@oclif/core';
import { SengCommand } from '../../base.js';
import { parseServeConfig, readConfigText } from '../../../gateway/config-file.js';

export default class ConfigCheck extends SengCommand<typeof ConfigCheck> {
  static override summary =
    'Validate a seng serve configuration file (YAML) and print every problem with its line:column.';
  static override description = `Checks what seng serve --config FILE would read: known keys (the long serve flag names, plus listen and port), value types and ranges, and options that need each other. Files named in it (certificates, database) are not opened.
Exit code 0 when the file is valid, 1 when it is not.`;
  static override examples = [
    '<%= config.bin %> config check /etc/seng/seng.yaml',
    '<%= config.bin %> config check /etc/seng/seng.yaml --json',
  ];
  static override args = {
    file: Args.string({ description: 'Configuration file to check.', required: true }),
  };

  async run(): Promise<unknown> {
    const file = this.args.file;
    const { options, issues } = parseServeConfig(readConfigText(file));
    const valid = issues.length === 0;
    if (!valid) process.exitCode = 1;
    if (this.jsonEnabled()) return { file, valid, errors: issues, ...(valid ? { options } : {}) };
    if (valid) {
      this.log(`${file}: valid (${Object.keys(options).length} options)`);
    } else {
      for (const i of issues) process.stderr.write(`${file}:${i.line}:${i.column}: ${i.message}\n`);
      process.stderr.write(`${file}: ${issues.length} problem${issues.length === 1 ? '' : 's'}\n`);
    }
    return undefined;
  }
}
