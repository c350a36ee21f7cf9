import { SengCommand } from '../base.js';
import { readFileSync } from 'node:fs';

export default class Version extends SengCommand<typeof Version> {
  static override summary = 'Print the seng version and the runtime it runs on.';

  async run(): Promise<{ version: string; node: string; openssl: string }> {
    const pkg = JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    const info = {
      version: pkg.version,
      node: process.versions.node,
      openssl: process.versions.openssl ?? '',
    };
    this.log(`seng ${info.version} (node ${info.node}, OpenSSL ${info.openssl})`);
    return info;
  }
}
