/**
 * Receive-buffer drops of UDP sockets, from the kernel's socket tables (/proc/PID/net/udp and
 * /proc/PID/net/udp6 show the sockets of PID's network namespace). Both tables matter: iperf3 -s
 * listens on a dual-stack IPv6 socket, so its IPv4 peers' datagrams land on a socket listed in
 * udp6 only.
 */

/**
 * Drops per socket (by inode) of the sockets whose local or remote port is `port`, from the text
 * of one or more socket tables (each with its header line). Lines that are not socket rows are
 * skipped.
 */
export function udpDropsByInode(tables: string[], port: number): Map<string, number> {
  const portHex = port.toString(16).toUpperCase().padStart(4, '0');
  const out = new Map<string, number>();
  for (const table of tables) {
    for (const line of table.split('\n').slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
      const f = line.trim().split(/\s+/);
      if (f.length < 13) continue;
      const local = f[1]?.split(':')[1];
      const remote = f[2]?.split(':')[1];
      if (local !== portHex && remote !== portHex) continue;
      const drops = Number(f[12]);
      if (Number.isFinite(drops)) out.set(f[9] as string, drops);
    }
  }
  return out;
}
