/**
 * Datagram fuzzer for a running gateway, shared by the benchmark's soak section and the
 * CI-sized test (test/integration/gateway/fuzz-soak.test.ts); both run it through
 * bench/workers/fuzz.ts inside the enclave host's namespace.
 *
 * Seeds are real traffic: a `Relay` sits between an in-process simulated enclave and the
 * gateway (ports Q/Q+1 locally → P/P+1 upstream) and records every datagram both ways. The
 * enclave's upstream sockets stay open, so the fuzzer can also send from the very address and
 * port of an established session. Kinds of datagram:
 *   random      random bytes, 0–1500 long
 *   shaped      a DTLS record header (content types, versions, epochs, lengths — valid and
 *               not) with a random or handshake-shaped body, sometimes several records
 *   truncated   a recorded datagram cut short
 *   mutated     a recorded datagram with 1–8 bytes changed
 *   replayed    a recorded datagram sent again unchanged (from its own socket or another)
 *   reordered   a recorded flight sent again in a shuffled order
 * All kinds go to both ports. On an established session's own address:port only kinds that
 * cannot carry a fresh ClientHello with a valid cookie are sent (see `safeForSession`): a new
 * ClientHello with a valid cookie from that address is, by design (RFC 6347 §4.2.8), a restart
 * of the peer and replaces its session, which is not what this fuzzer tests.
 */
import { createSocket, type Socket } from 'node:dgram';

/** Deterministic PRNG (mulberry32), so a failing run can be repeated with its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Recorded {
  /** 0 = gateway port P, 1 = P+1. */
  port: 0 | 1;
  /** true: enclave → gateway. */
  up: boolean;
  data: Buffer;
}

function bindSocket(address: string, port = 0): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    s.once('error', reject);
    s.bind({ address, port, exclusive: true }, () => {
      s.off('error', reject);
      s.on('error', () => {
        /* ICMP errors of connected sockets (gateway gone) must not crash the worker */
      });
      resolve(s);
    });
  });
}

/**
 * A recording UDP relay: local ports Q and Q+1 on `address` forward to the gateway's P and
 * P+1, one upstream socket per local client (so the gateway sees one address:port per session).
 */
export class Relay {
  readonly recorded: Recorded[] = [];
  /** Upstream sockets by local client and port: the sessions' own address:port at the gateway. */
  readonly upstream: { port: 0 | 1; socket: Socket }[] = [];
  private constructor(
    readonly localPort: number,
    private readonly locals: [Socket, Socket],
    private readonly address: string,
    private readonly gateway: string,
    private readonly gatewayPort: number,
    private readonly maxRecorded: number,
  ) {
    locals.forEach((s, i) => this.serve(s, i as 0 | 1));
  }

  static async open(
    address: string,
    gateway: string,
    gatewayPort: number,
    maxRecorded = 400,
  ): Promise<Relay> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const q = 20000 + Math.floor(Math.random() * 20000) * 2;
      let a: Socket | undefined;
      try {
        a = await bindSocket(address, q);
        const b = await bindSocket(address, q + 1);
        return new Relay(q, [a, b], address, gateway, gatewayPort, maxRecorded);
      } catch {
        a?.close();
      }
    }
    throw new Error(`cannot bind two adjacent UDP ports on ${address}`);
  }

  private record(port: 0 | 1, up: boolean, data: Buffer): void {
    if (this.recorded.length < this.maxRecorded) this.recorded.push({ port, up, data: Buffer.from(data) });
  }

  private serve(local: Socket, port: 0 | 1): void {
    const clients = new Map<string, Promise<Socket>>();
    local.on('message', (msg, rinfo) => {
      this.record(port, true, msg);
      const key = `${rinfo.address}:${rinfo.port}`;
      let up = clients.get(key);
      if (!up) {
        up = bindSocket(this.address).then((s) => {
          s.on('message', (reply) => {
            this.record(port, false, reply);
            local.send(reply, rinfo.port, rinfo.address);
          });
          this.upstream.push({ port, socket: s });
          return s;
        });
        clients.set(key, up);
      }
      void up.then((s) => s.send(msg, this.gatewayPort + port, this.gateway));
    });
  }

  close(): void {
    for (const s of this.locals) s.close();
    for (const u of this.upstream) u.socket.close();
  }
}

export type FuzzKind = 'random' | 'shaped' | 'truncated' | 'mutated' | 'replayed' | 'reordered';
export const FUZZ_KINDS: FuzzKind[] = ['random', 'shaped', 'truncated', 'mutated', 'replayed', 'reordered'];

export interface FuzzOptions {
  /** Datagrams to send in all. */
  count: number;
  gateway: string;
  gatewayPort: number;
  /** Local address for the fuzzer's own sockets. */
  localAddress: string;
  seeds: Recorded[];
  /** Sockets of established sessions (their address:port at the gateway), with their port. */
  sessionSockets?: { port: 0 | 1; socket: Socket }[];
  seed?: number;
  /** Fresh source sockets to spread the datagrams over. */
  sources?: number;
  /**
   * Also send from the sessions' own address:port (default true). A forged record there reaches
   * the session's record layer itself, not just the listener's demultiplexing.
   */
  onSessionTuples?: boolean;
  /** Only these kinds (all by default). */
  kinds?: FuzzKind[];
  /** Upper bound on the send rate (datagrams/s); unlimited when absent. */
  maxRate?: number;
  /** Called every ~`count/20` datagrams (progress, forwarding checks). */
  onProgress?: (sent: number) => Promise<void> | void;
}

export interface FuzzReport {
  sent: number;
  byKind: Record<FuzzKind, number>;
  byPort: [number, number];
  /** Sent from an established session's own address:port. */
  onSessionTuples: number;
  sendErrors: number;
  seconds: number;
  seed: number;
}

const CONTENT_TYPES = [20, 21, 22, 23, 24, 0, 255];
const VERSIONS = [0xfefd, 0xfeff, 0x0303, 0xfefc, 0x0000];

function randomBytes(rnd: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (rnd() * 256) | 0;
  return b;
}

const pick = <T>(rnd: () => number, xs: readonly T[]): T => xs[(rnd() * xs.length) | 0] as T;

/** One DTLS-record-shaped datagram: plausible headers, implausible contents. */
export function shapedDatagram(rnd: () => number): Buffer {
  const records = rnd() < 0.8 ? 1 : 2 + ((rnd() * 3) | 0);
  const parts: Buffer[] = [];
  for (let r = 0; r < records; r++) {
    const bodyLen = rnd() < 0.5 ? (rnd() * 64) | 0 : (rnd() * 1400) | 0;
    const type = pick(rnd, CONTENT_TYPES);
    let body = randomBytes(rnd, bodyLen);
    if (type === 22 && bodyLen >= 12 && rnd() < 0.7) {
      // Handshake header: type, length, message_seq, fragment_offset, fragment_length.
      body[0] = pick(rnd, [1, 2, 3, 11, 12, 13, 14, 15, 16, 20, 255]);
      body.writeUIntBE(rnd() < 0.5 ? bodyLen - 12 : (rnd() * 0xffffff) | 0, 1, 3);
      body.writeUInt16BE(rnd() < 0.5 ? 0 : (rnd() * 0xffff) | 0, 4);
      body.writeUIntBE(rnd() < 0.5 ? 0 : (rnd() * 0xffffff) | 0, 6, 3);
      body.writeUIntBE(rnd() < 0.5 ? bodyLen - 12 : (rnd() * 0xffffff) | 0, 9, 3);
    }
    const h = Buffer.alloc(13);
    h[0] = type;
    h.writeUInt16BE(pick(rnd, VERSIONS), 1);
    h.writeUInt16BE(rnd() < 0.6 ? 0 : rnd() < 0.5 ? 1 : (rnd() * 0xffff) | 0, 3);
    h.writeUIntBE(Math.floor(rnd() * 0xffffffffffff), 5, 6);
    const declared = rnd() < 0.6 ? bodyLen : (rnd() * 0xffff) | 0;
    h.writeUInt16BE(declared, 11);
    if (rnd() < 0.1) body = body.subarray(0, (rnd() * bodyLen) | 0);
    parts.push(h, body);
  }
  return Buffer.concat(parts);
}

/** Is this a ClientHello record (epoch 0, handshake, msg type 1)? */
function isClientHello(d: Buffer): boolean {
  return d.length >= 14 && d[0] === 22 && d.readUInt16BE(3) === 0 && d[13] === 1;
}

/**
 * May this datagram go out from an established session's own address:port? Not a mutated
 * ClientHello (a changed random with an intact cookie is a legitimate peer restart).
 */
function safeForSession(kind: FuzzKind, d: Buffer): boolean {
  if (kind === 'mutated' || kind === 'shaped') return !isClientHello(d);
  return true;
}

/** Sends `count` malformed, truncated, replayed and reordered datagrams to both ports. */
export async function fuzz(o: FuzzOptions): Promise<FuzzReport> {
  const seed = o.seed ?? Date.now() & 0x7fffffff;
  const rnd = prng(seed);
  const sources = await Promise.all(Array.from({ length: o.sources ?? 8 }, () => bindSocket(o.localAddress)));
  const ups = o.seeds.filter((s) => s.up);
  const kinds = o.kinds?.length ? o.kinds : FUZZ_KINDS;
  const report: FuzzReport = {
    sent: 0,
    byKind: Object.fromEntries(FUZZ_KINDS.map((k) => [k, 0])) as Record<FuzzKind, number>,
    byPort: [0, 0],
    onSessionTuples: 0,
    sendErrors: 0,
    seconds: 0,
    seed,
  };
  const t0 = performance.now();
  const progressEvery = Math.max(1, Math.floor(o.count / 20));
  let nextProgress = progressEvery;
  let inFlight = 0;
  const send = (socket: Socket, data: Buffer, port: 0 | 1, kind: FuzzKind, onSession: boolean) => {
    inFlight++;
    socket.send(data, o.gatewayPort + port, o.gateway, (err) => {
      inFlight--;
      if (err) report.sendErrors++;
    });
    report.sent++;
    report.byKind[kind]++;
    report.byPort[port]++;
    if (onSession) report.onSessionTuples++;
  };
  try {
    while (report.sent < o.count) {
      // One batch, then yield to the event loop (and to the rate limit).
      for (let i = 0; i < 64 && report.sent < o.count; i++) {
        const kind = pick(rnd, ups.length ? kinds : kinds.filter((k) => k === 'random' || k === 'shaped'));
        const seedDgram = ups.length ? pick(rnd, ups) : undefined;
        const port: 0 | 1 = seedDgram && rnd() < 0.7 ? seedDgram.port : rnd() < 0.5 ? 0 : 1;
        const batch: Buffer[] = [];
        if (kind === 'random') batch.push(randomBytes(rnd, (rnd() * 1501) | 0));
        else if (kind === 'shaped') batch.push(shapedDatagram(rnd));
        else if (kind === 'truncated')
          batch.push(seedDgram!.data.subarray(0, (rnd() * seedDgram!.data.length) | 0));
        else if (kind === 'mutated') {
          const d = Buffer.from(seedDgram!.data);
          const flips = 1 + ((rnd() * 8) | 0);
          for (let f = 0; f < flips && d.length; f++) d[(rnd() * d.length) | 0] = (rnd() * 256) | 0;
          batch.push(d);
        } else if (kind === 'replayed') batch.push(seedDgram!.data);
        else {
          // A flight of up to 6 recorded datagrams of one port, shuffled.
          const same = ups.filter((s) => s.port === port);
          const start = (rnd() * same.length) | 0;
          const flight = same.slice(start, start + 2 + ((rnd() * 5) | 0)).map((s) => s.data);
          for (let j = flight.length - 1; j > 0; j--) {
            const k = (rnd() * (j + 1)) | 0;
            [flight[j], flight[k]] = [flight[k] as Buffer, flight[j] as Buffer];
          }
          batch.push(...flight);
        }
        const sessionSocket =
          o.onSessionTuples === false ? undefined : o.sessionSockets?.find((s) => s.port === port);
        const onSession =
          sessionSocket !== undefined && rnd() < 0.3 && batch.every((d) => safeForSession(kind, d));
        const socket = onSession ? sessionSocket.socket : pick(rnd, sources);
        for (const d of batch) if (report.sent < o.count) send(socket, d, port, kind, onSession);
      }
      if (o.maxRate) {
        const ahead = report.sent / o.maxRate - (performance.now() - t0) / 1000;
        if (ahead > 0.002) await new Promise((r) => setTimeout(r, ahead * 1000));
      }
      // Let the socket queue drain instead of growing without bound.
      while (inFlight > 4096) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      if (report.sent >= nextProgress) {
        nextProgress += progressEvery;
        await o.onProgress?.(report.sent);
      }
    }
    while (inFlight > 0) await new Promise((r) => setImmediate(r));
  } finally {
    for (const s of sources) s.close();
  }
  report.seconds = Math.round((performance.now() - t0) / 10) / 100;
  return report;
}

/** RFC 1071 checksum. */
function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += (b[b.length - 1] as number) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An IPv4 ICMP echo request from `src` to `dst` (dotted quads). */
export function icmpEcho(src: string, dst: string, id: number, seq: number): Buffer {
  const payload = Buffer.from('seng-fuzz-soak-probe');
  const icmp = Buffer.alloc(8 + payload.length);
  icmp[0] = 8;
  icmp.writeUInt16BE(id, 4);
  icmp.writeUInt16BE(seq, 6);
  payload.copy(icmp, 8);
  icmp.writeUInt16BE(checksum(icmp), 2);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + icmp.length, 2);
  ip.writeUInt16BE(id, 4);
  ip[8] = 64;
  ip[9] = 1;
  Buffer.from(src.split('.').map(Number)).copy(ip, 12);
  Buffer.from(dst.split('.').map(Number)).copy(ip, 16);
  ip.writeUInt16BE(checksum(ip), 10);
  return Buffer.concat([ip, icmp]);
}

/** Is `pkt` the ICMP echo reply to (id, seq)? */
export function isEchoReply(pkt: Buffer, id: number, seq: number): boolean {
  if (pkt.length < 28 || pkt[9] !== 1) return false;
  const ihl = ((pkt[0] as number) & 0x0f) * 4;
  return pkt[ihl] === 0 && pkt.readUInt16BE(ihl + 4) === id && pkt.readUInt16BE(ihl + 6) === seq;
}
