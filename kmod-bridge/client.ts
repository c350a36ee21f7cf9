/**
 * `SengKmodClient`: talks to the seng kernel module over generic netlink.
 *
 * Resolves `seng_family` through the controller (once; again if the module goes away),
 * sends each request with REQUEST | ACK, waits for the ack with a timeout, and retries a
 * bounded number of times on transient failures only (socket ENOBUFS/EAGAIN/EBUSY/ENOMEM/
 * EINTR, the same errnos from the kernel, and timeouts). A kernel rejection such as EINVAL
 * is final. Errors are typed: {@link KmodFamilyMissingError}, {@link KmodRejectedError},
 * {@link KmodTimeoutError}.
 */
import type { Logger } from 'pino';
import { silentLogger } from '../src/util/log.js';
import { formatIpv4, type Ipv4 } from '../src/util/ipv4.js';
import {
  Errno,
  NETLINK_GENERIC,
  NetlinkChannel,
  NetlinkError,
  NetlinkTimeoutError,
  RawSocketTransport,
  getFamily,
  type GenlFamily,
  type NetlinkTransport,
} from '../src/netlink/index.js';
import { KmodFamilyMissingError, KmodRejectedError, KmodTimeoutError } from './errors.js';
import {
  SENG_FAMILY_NAME,
  SENG_MCGRP_NAME,
  describeRegister,
  encodeCategory,
  encodeFlush,
  encodeRegister,
  encodeUnregister,
  sengNlmsg,
  type RegisterRequest,
} from './seng.js';

/** errnos worth another attempt: resource shortage or interruption, not a verdict. */
const TRANSIENT = new Set<number>([Errno.EINTR, Errno.EAGAIN, Errno.ENOMEM, Errno.EBUSY, Errno.ENOBUFS]);

export interface SengKmodClientOptions {
  /** Socket boundary; default: a real NETLINK_GENERIC socket. */
  transport?: NetlinkTransport;
  /** Ack timeout per attempt, ms (default 1000). */
  timeoutMs?: number;
  /** Extra attempts after a transient failure (default 4, like the prototype library). */
  retries?: number;
  /** First back-off delay, ms, doubled per retry (default 20). */
  retryDelayMs?: number;
  /** Family name (default `seng_family`; tests point it at other families). */
  familyName?: string;
  logger?: Logger;
}

export interface KmodStatus {
  family: string;
  present: boolean;
  id?: number;
  version?: number;
  maxAttr?: number;
  multicastGroup?: { name: string; id: number };
  message?: string;
}

function isTransient(err: unknown): boolean {
  if (err instanceof NetlinkTimeoutError) return true;
  return err instanceof NetlinkError && TRANSIENT.has(err.errno);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class SengKmodClient {
  private readonly channel: NetlinkChannel;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly log: Logger;
  readonly familyName: string;
  private family: GenlFamily | undefined;
  /** Requests the module acknowledged; 0 plus EINVAL hints at the Linux ≥ 6.0 policy problem. */
  private acked = 0;
  private closed = false;

  constructor(opts: SengKmodClientOptions = {}) {
    this.channel = new NetlinkChannel(opts.transport ?? new RawSocketTransport(NETLINK_GENERIC));
    this.timeoutMs = opts.timeoutMs ?? 1000;
    this.retries = opts.retries ?? 4;
    this.retryDelayMs = opts.retryDelayMs ?? 20;
    this.familyName = opts.familyName ?? SENG_FAMILY_NAME;
    this.log = opts.logger ?? silentLogger;
  }

  /** Resolves the family (cached). Throws {@link KmodFamilyMissingError} when it is not registered. */
  async resolve(): Promise<GenlFamily> {
    if (this.family) return this.family;
    const f = await this.withRetries(`resolving ${this.familyName}`, () =>
      getFamily(this.channel, this.familyName, this.timeoutMs),
    );
    if (!f) throw new KmodFamilyMissingError(this.familyName);
    this.log.debug({ family: f.name, id: f.id, version: f.version }, 'resolved generic netlink family');
    this.family = f;
    return f;
  }

  /** Whether the family is registered, with its id, version and multicast group. Never throws for "absent". */
  async status(): Promise<KmodStatus> {
    this.family = undefined;
    try {
      const f = await this.resolve();
      const group = f.mcastGroups.find((g) => g.name === SENG_MCGRP_NAME) ?? f.mcastGroups[0];
      return {
        family: f.name,
        present: true,
        id: f.id,
        version: f.version,
        maxAttr: f.maxAttr,
        ...(group ? { multicastGroup: group } : {}),
      };
    } catch (err) {
      if (err instanceof KmodFamilyMissingError) {
        return { family: this.familyName, present: false, message: err.message };
      }
      throw err;
    }
  }

  /** Rule 1: register an enclave IP with its app and host (optionally adding one category). */
  register(r: RegisterRequest): Promise<void> {
    return this.send('register', encodeRegister(r), describeRegister(r));
  }

  /** Rule 2: unregister an enclave IP. */
  unregister(enclaveIp: Ipv4): Promise<void> {
    return this.send('unregister', encodeUnregister(enclaveIp), formatIpv4(enclaveIp));
  }

  /** Rule 3: add a category to an app that has a registered enclave. */
  addCategory(mrEnclave: Buffer, category: string): Promise<void> {
    return this.send(
      'category-add',
      encodeCategory('add', mrEnclave, category),
      `${category} to app ${short(mrEnclave)}`,
    );
  }

  /** Rule 3: remove a category from an app that has a registered enclave. */
  removeCategory(mrEnclave: Buffer, category: string): Promise<void> {
    return this.send(
      'category-remove',
      encodeCategory('remove', mrEnclave, category),
      `${category} from app ${short(mrEnclave)}`,
    );
  }

  /** Rule 4: drop every enclave, app and category. */
  flush(): Promise<void> {
    return this.send('flush', encodeFlush());
  }

  /** Runs `fn` with a fresh client and closes it afterwards (for one-shot commands). */
  static async with<T>(opts: SengKmodClientOptions, fn: (client: SengKmodClient) => Promise<T>): Promise<T> {
    const client = new SengKmodClient(opts);
    try {
      return await fn(client);
    } finally {
      client.close();
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.channel.close();
  }

  private async send(request: string, payload: Buffer, detail?: string): Promise<void> {
    const family = await this.resolve();
    try {
      await this.withRetries(request, () =>
        this.channel.request((seq, port) => sengNlmsg(family.id, seq, port, payload), {
          timeoutMs: this.timeoutMs,
          what: request,
        }),
      );
      this.acked++;
      this.log.debug({ request, detail }, 'seng module acknowledged');
    } catch (err) {
      if (err instanceof NetlinkError && err.isKernel()) {
        if (err.errno === Errno.ENOENT) {
          // Messages to an unknown family id get ENOENT: the module was unloaded.
          this.family = undefined;
          const again = await getFamily(this.channel, this.familyName, this.timeoutMs).catch(() => null);
          if (!again) throw new KmodFamilyMissingError(this.familyName);
          this.family = again;
        }
        throw new KmodRejectedError(request, err.errno, {
          allEinval: err.errno === Errno.EINVAL && this.acked === 0,
          ...(err.extack ? { extack: err.extack } : {}),
          ...(detail ? { detail } : {}),
        });
      }
      throw err;
    }
  }

  private async withRetries<T>(request: string, attempt: () => Promise<T>): Promise<T> {
    let tries = 0;
    for (;;) {
      tries++;
      try {
        return await attempt();
      } catch (err) {
        if (!isTransient(err) || tries > this.retries) {
          if (err instanceof NetlinkTimeoutError) throw new KmodTimeoutError(request, this.timeoutMs, tries);
          throw err;
        }
        this.log.warn(
          { request, attempt: tries, err: (err as Error).message },
          'transient netlink failure; retrying',
        );
        await sleep(this.retryDelayMs * 2 ** (tries - 1));
      }
    }
  }
}

function short(mrEnclave: Buffer): string {
  return `${mrEnclave.toString('hex').slice(0, 16)}…`;
}
