/**
 * Text from a package (member names, the manifest's description, certificate subjects) reaches
 * terminals, logs and the console. Characters that drive a terminal or reorder what it shows are
 * written as escapes instead: C0 controls and DEL, C1 controls (\u009b is a one-byte CSI), the
 * bidirectional embeddings, overrides and isolates, and the line and paragraph separators.
 */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
// What JSON.stringify leaves raw inside strings (it escapes C0 itself; its own newlines are layout).
const UNSAFE_IN_JSON = /[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const SHORT: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeChar(c: string): string {
  return SHORT[c] ?? `\\u${(c.codePointAt(0) ?? 0).toString(16).padStart(4, '0')}`;
}

/** The text with every unsafe character written as an escape (\n, \t, \u001b...). */
export function escapeControl(text: string): string {
  return text.replace(UNSAFE, escapeChar);
}

/** The text between double quotes, escaped, with its own quotes and backslashes escaped too. */
export function quote(text: string): string {
  return `"${escapeControl(text.replace(/["\\]/g, '\\$&'))}"`;
}

/**
 * JSON whose text holds no unsafe character: JSON.stringify leaves DEL, C1 and the bidirectional
 * controls raw, so they are written as \u escapes, which parse back to the same value.
 */
export function safeJson(value: unknown, space?: number): string {
  return JSON.stringify(value, null, space).replace(UNSAFE_IN_JSON, (c) => `\\u${(c.codePointAt(0) ?? 0).toString(16).padStart(4, '0')}`);
}
