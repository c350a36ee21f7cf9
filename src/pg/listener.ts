/**
 * A LISTEN connection that survives server restarts. PostgreSQL delivers NOTIFY only to
 * sessions that are connected at that moment, so whoever follows a channel must treat every
 * (re)connection as "I may have missed changes": the 'connected' event says so, and its
 * users resynchronise completely there (gateway policy reload, agent resync).
 *
 *   const l = new PgListener(url, ['seng_policy'], { log });
 *   l.on('connected', (first) => resync());
 *   l.on('notification', (channel, payload) => apply(payload));
 *   await l.start();     // resolves after the first successful LISTEN (or throws PgConnectionError)
 *   await l.stop();
 */
import { EventEmitter } from 'node:events';
import pg from 'pg';
import { errorMessage } from '../util/errors.js';
import { PgConnectionError, backoffDelay, redactUrl } from './connection.js';

export interface ListenerLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface PgListenerOptions {
  log?: ListenerLog;
  /** Largest reconnection delay (ms). */
  maxBackoffMs?: number;
  applicationName?: string;
}

export interface PgListenerEvents {
  /** A LISTEN session is up; `first` is false after a reconnection (resync now). */
  connected: [first: boolean];
  /** The session was lost; reconnection attempts follow. */
  disconnected: [err: Error];
  notification: [channel: string, payload: string];
}

const CHANNEL = /^[a-z_][a-z0-9_]{0,62}$/;

export class PgListener extends EventEmitter<PgListenerEvents> {
  private client: pg.Client | undefined;
  private stopped = false;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private everConnected = false;

  constructor(
    private readonly url: string,
    private readonly channels: readonly string[],
    private readonly opts: PgListenerOptions = {},
  ) {
    super();
    // Channel names are identifiers in LISTEN, which takes no parameters: allow only plain ones.
    for (const c of channels) if (!CHANNEL.test(c)) throw new Error(`invalid LISTEN channel name ${c}`);
  }

  get connected(): boolean {
    return this.client !== undefined;
  }

  /** Connects and LISTENs; rejects with PgConnectionError when the first attempt fails. */
  async start(): Promise<void> {
    try {
      await this.connect();
    } catch (err) {
      throw new PgConnectionError(this.url, err);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => {});
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.url,
      connectionTimeoutMillis: 5_000,
      application_name: this.opts.applicationName ?? 'seng-listen',
      // TCP keepalive so a silently dead server is noticed, not waited on forever.
      keepAlive: true,
    });
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    client.on('notification', (n) => {
      if (client === this.client) this.emit('notification', n.channel, n.payload ?? '');
    });
    await client.connect();
    try {
      for (const c of this.channels) await client.query(`LISTEN ${c}`);
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    if (this.stopped) {
      await client.end().catch(() => {});
      return;
    }
    this.client = client;
    this.attempt = 0;
    const first = !this.everConnected;
    this.everConnected = true;
    if (!first)
      this.opts.log?.info(
        { event: 'pg-reconnected', url: redactUrl(this.url) },
        'PostgreSQL connection restored',
      );
    this.emit('connected', first);
  }

  private lost(client: pg.Client, err: Error): void {
    if (client !== this.client) return;
    this.client = undefined;
    void client.end().catch(() => {});
    if (this.stopped) return;
    this.opts.log?.warn(
      { event: 'pg-disconnected', url: redactUrl(this.url), err: errorMessage(err) },
      'PostgreSQL connection lost; reconnecting with backoff',
    );
    this.emit('disconnected', err);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    const delay = backoffDelay(++this.attempt, 100, this.opts.maxBackoffMs ?? 5_000);
    this.retryTimer = setTimeout(() => {
      this.connect().catch(() => this.scheduleReconnect());
    }, delay);
    this.retryTimer.unref?.();
  }
}
