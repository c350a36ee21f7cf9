/**
 * Typed, actionable errors. Every error that reaches an operator carries a stable
 * `code` (for scripts, printed in --json output) and, where we know one, a `hint`
 * that says what to do about it.
 */
export class SengError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  /** Process exit code the CLI uses for this error. */
  readonly exitCode: number;

  constructor(
    code: string,
    message: string,
    options: { hint?: string; cause?: unknown; exitCode?: number } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options.hint;
    this.exitCode = options.exitCode ?? 1;
  }

  toJSON(): { code: string; message: string; hint?: string } {
    return { code: this.code, message: this.message, ...(this.hint ? { hint: this.hint } : {}) };
  }
}

/** Bad user input: a flag, an argument, a file's content. */
export class InputError extends SengError {
  constructor(message: string, hint?: string) {
    super('EINPUT', message, hint === undefined ? {} : { hint });
  }
}

/** Something the environment lacks: a file, a kernel feature, a permission. */
export class EnvironmentError extends SengError {
  constructor(code: string, message: string, hint?: string, cause?: unknown) {
    super(code, message, { ...(hint === undefined ? {} : { hint }), cause });
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
