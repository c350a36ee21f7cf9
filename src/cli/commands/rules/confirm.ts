import { SengCommand } from '../../base.js';
import { tableFlag } from '../../policy-flags.js';
import { SengError } from '../../../util/errors.js';
import { pendingPath, takePending } from '../../rules-pending.js';

export default class RulesConfirm extends SengCommand<typeof RulesConfirm> {
  static override summary = 'Keep the rules a waiting `seng rules apply --confirm` installed.';
  static override description = `Without this confirmation (or y at its prompt) within the time given to --confirm, apply puts the previous rules back. Exit status 1 when no change of the table is waiting (for example because it was already rolled back).`;
  static override examples = [
    '<%= config.bin %> rules confirm',
    '<%= config.bin %> rules confirm --table seng',
  ];
  static override flags = {
    table: tableFlag({ summary: 'nftables table of the waiting change.', default: 'seng' }),
  };

  async run(): Promise<{ table: string; confirmed: true }> {
    const table = this.flags.table;
    if (!takePending(pendingPath(table))) {
      throw new SengError('ENOPENDING', `no rules change of table ip ${table} is waiting for confirmation`, {
        hint: 'it may have been rolled back already (its time ran out); apply again with --confirm',
      });
    }
    this.log(`confirmed: the new rules of table ip ${table} stay`);
    return { table, confirmed: true };
  }
}
