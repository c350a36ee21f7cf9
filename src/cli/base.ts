/**
 * Base class of every `seng` command: the shared `--json`, `--log-format` and
 * `--log-level` flags, a pino logger, and one error path that prints typed
 * errors as "Error: … / Hint: …" on stderr (or as `{"error": {...}}` on stdout
 * with --json) and sets the exit code (1 for failures; oclif uses 2 for usage errors).
 */
import { Command, Flags, Errors, type Interfaces } from '@oclif/core';
import { SengError } from '../util/errors.js';
import { createLogger, type Logger, type LogFormat } from '../util/log.js';

export type SengFlags<T extends typeof Command> = Interfaces.InferredFlags<
  (typeof SengCommand)['baseFlags'] & T['flags']
>;
export type SengArgs<T extends typeof Command> = Interfaces.InferredArgs<T['args']>;

export abstract class SengCommand<T extends typeof Command> extends Command {
  static override enableJsonFlag = true;

  static override baseFlags = {
    'log-format': Flags.option({
      options: ['auto', 'json', 'pretty'] as const,
      default: 'auto' as const,
      helpGroup: 'GLOBAL',
      summary: 'Log format on stderr: pretty on a terminal, JSON lines otherwise (auto).',
    })(),
    'log-level': Flags.option({
      options: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const,
      default: 'info' as const,
      helpGroup: 'GLOBAL',
      summary: 'Minimum level of log records.',
    })(),
  };

  protected flags!: SengFlags<T>;
  protected args!: SengArgs<T>;
  protected logger!: Logger;

  public override async init(): Promise<void> {
    await super.init();
    const { args, flags } = await this.parse({
      flags: this.ctor.flags,
      baseFlags: (this.ctor as typeof SengCommand).baseFlags,
      enableJsonFlag: this.ctor.enableJsonFlag,
      args: this.ctor.args,
      strict: this.ctor.strict,
    });
    this.flags = flags as SengFlags<T>;
    this.args = args as SengArgs<T>;
    this.logger = createLogger({
      format: this.flags['log-format'] as LogFormat,
      level: this.flags['log-level'],
      name: 'seng',
    });
  }

  /** Print a JSON value to stdout regardless of --json (for commands whose output is JSON by nature). */
  protected printJson(value: unknown): void {
    process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  protected override async catch(err: Error & { exitCode?: number }): Promise<unknown> {
    if (err instanceof SengError) {
      process.exitCode = err.exitCode;
      if (this.jsonEnabled()) {
        this.logJson({ error: err.toJSON() });
      } else {
        process.stderr.write(`Error: ${err.message}\n${err.hint ? `Hint: ${err.hint}\n` : ''}`);
      }
      return;
    }
    if (err instanceof Errors.CLIError || (err as { oclif?: unknown }).oclif) {
      // Usage errors from oclif's parser (unknown flag, missing argument): exit code 2.
      if (this.jsonEnabled()) {
        process.exitCode = (err as { oclif?: { exit?: number } }).oclif?.exit ?? 2;
        this.logJson({ error: { code: 'EUSAGE', message: err.message } });
        return;
      }
      return super.catch(err);
    }
    // An unexpected error is a bug: keep the stack for the report.
    process.exitCode = 1;
    if (this.jsonEnabled()) this.logJson({ error: { code: 'EINTERNAL', message: err.message } });
    else process.stderr.write(`Internal error (please report): ${err.stack ?? err.message}\n`);
    return;
  }
}
