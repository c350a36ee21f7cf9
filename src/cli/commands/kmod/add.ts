import { Flags } from '@oclif/core';
import { SengCommand } from '../../base.js';
import { SengKmodClient, parseAppHex, validateCategory } from '../../../../kmod-bridge/index.js';
import { formatIpv4, parseIpv4 } from '../../../util/ipv4.js';

export default class KmodAdd extends SengCommand<typeof KmodAdd> {
  static override summary =
    'Register an enclave IP with its app and untrusted host in the seng kernel module.';
  static override description =
    'Sends ENC + APP + HOST + ADD (SPEC §5.1 rule 1), with an optional CAT that adds a category to the app. ' +
    'The module refuses an IP that is already registered.';
  static override examples = [
    '<%= config.bin %> kmod add --enclave 192.168.28.2 --app d923…c3b0 --host 10.0.0.7',
    '<%= config.bin %> kmod add --enclave 192.168.28.2 --app d923…c3b0 --host 10.0.0.7 --category Browser',
  ];
  static override flags = {
    enclave: Flags.string({ summary: 'Enclave IP.', required: true }),
    app: Flags.string({ summary: 'App measurement (MRENCLAVE), 64 hex digits.', required: true }),
    host: Flags.string({ summary: "IP of the enclave's untrusted host.", required: true }),
    category: Flags.string({
      summary: 'Category to add to the app with the registration (at most 20 characters).',
    }),
    timeout: Flags.integer({
      summary: 'Milliseconds to wait for each acknowledgement.',
      default: 1000,
      min: 1,
      max: 600_000, // node timers hold at most 2^31-1 ms
    }),
  };

  async run(): Promise<{ enclave: string; app: string; host: string; category?: string; registered: true }> {
    const enclaveIp = parseIpv4(this.flags.enclave);
    const hostIp = parseIpv4(this.flags.host);
    const mrEnclave = parseAppHex(this.flags.app);
    const category = this.flags.category === undefined ? undefined : validateCategory(this.flags.category);
    await SengKmodClient.with({ logger: this.logger, timeoutMs: this.flags.timeout }, (c) =>
      c.register({ enclaveIp, mrEnclave, hostIp, ...(category === undefined ? {} : { category }) }),
    );
    const out = {
      enclave: formatIpv4(enclaveIp),
      app: mrEnclave.toString('hex'),
      host: formatIpv4(hostIp),
      ...(category === undefined ? {} : { category }),
      registered: true as const,
    };
    this.log(
      `registered ${out.enclave} (app ${out.app}, host ${out.host}${category ? `, category ${category}` : ''})`,
    );
    return out;
  }
}
