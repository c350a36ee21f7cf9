/** Quoting user input for messages (errors, tables): one rule for every command. */

/** How much of a user's input an error message echoes. */
export const ECHO_MAX = 40;

/**
 * Quotes user input for an error message: control, format and bidi characters are
 * escaped (a newline or an ANSI escape must not reach the terminal raw) and long
 * input is cut, so a 5,000-character argument does not flood the screen.
 */
export function quoteInput(text: string, max = ECHO_MAX): string {
  const chars = [...text];
  const shown = chars.length > max ? chars.slice(0, max).join('') : text;
  const escaped = shown.replace(/[\p{Cc}\p{Cf}\\"]/gu, (ch) => {
    if (ch === '\\' || ch === '"') return `\\${ch}`;
    const cp = ch.codePointAt(0) ?? 0;
    return cp <= 0xff ? `\\x${cp.toString(16).padStart(2, '0')}` : `\\u{${cp.toString(16)}}`;
  });
  return chars.length > max ? `"${escaped}…" (${chars.length} characters)` : `"${escaped}"`;
}
