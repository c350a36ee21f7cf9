/** Flags and output helpers shared by the `seng db …` commands. */
import { Flags } from '@oclif/core';
import { formatCidr, formatIpv4 } from '../util/ipv4.js';
import type { AppRecord, SubnetRecord } from '../store/index.js';

export const dbFlag = Flags.string({
  char: 'd',
  summary: 'Path of the SQLite policy database.',
  env: 'SENG_DB',
  required: true,
});

export function subnetJson(s: SubnetRecord): { id: number; subnet: string; gateway: string | null } {
  return { id: s.id, subnet: formatCidr(s.cidr), gateway: s.gateway === null ? null : formatIpv4(s.gateway) };
}

export interface AppJson {
  id: number;
  name: string;
  mrEnclave: string;
  mrSigner: string;
  categories?: string[];
  hostSubnet?: string;
  enclaveSubnet?: string | null;
}

export function appJson(a: AppRecord, subnets: SubnetRecord[]): AppJson {
  const out: AppJson = {
    id: a.id,
    name: a.name,
    mrEnclave: a.mrEnclave.toString('hex'),
    mrSigner: a.mrSigner.toString('hex'),
  };
  if (a.hostSubnet) {
    out.hostSubnet = formatCidr(a.hostSubnet);
    const s = subnets.find((x) => x.id === a.enclaveSubnetId);
    out.enclaveSubnet = s ? formatCidr(s.cidr) : null;
  } else {
    out.categories = a.categories;
  }
  return out;
}

/** Renders rows as an aligned text table for terminals. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}
