/**
 * An error caused by the user's input (a file, a column, a flag). The CLI prints its message as one
 * line, without a stack trace, and exits with status 1. Messages name the file/column/tensor/row and
 * say what was expected.
 */
export class UserError extends Error {
  override name = 'UserError';
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}

export type FileSystemError = NodeJS.ErrnoException & { path: string; code: string; dest?: string };

/** An error from a file-system call (it carries the path and an errno code such as EISDIR, EPERM, ENOSPC). */
export function isFileSystemError(e: unknown): e is FileSystemError {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string' && typeof (e as NodeJS.ErrnoException).path === 'string';
}

/** What failed, without Node's code prefix and quoted paths: "permission denied (EACCES on open)". */
export function fileSystemReason(e: NodeJS.ErrnoException): string {
  const reason = e.code === 'EISDIR' ? 'is a directory, expected a file' : e.message.replace(/^[A-Z]+: /, '').replace(/, \w+ '.*$/, '');
  return `${reason} (${e.code ?? 'error'}${e.syscall ? ` on ${e.syscall}` : ''})`;
}

/** One line for a file-system error: the path, then what failed. */
export function fileSystemErrorLine(e: FileSystemError): string {
  return `${e.path}: ${fileSystemReason(e)}${e.dest ? ` (to ${e.dest})` : ''}`;
}

/** The most characters of an input's value an error line repeats (a 52 MB value must not become a 52 MB line). */
export const MAX_ECHO_CHARS = 80;

/** Text from an input cut to a readable length for an error line, saying how long it really was. */
export function clipped(text: string, max = MAX_ECHO_CHARS): string {
  return text.length > max ? `${text.slice(0, max - 3)}... (${text.length} characters)` : text;
}

/** A value as an error line shows it: JSON, cut to a readable length, or `nothing` for a missing one. */
export function shown(value: unknown, max = MAX_ECHO_CHARS): string {
  if (value === undefined) return 'nothing';
  // JSON would print null for a YAML `.inf` or `.nan`.
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value); // a BigInt, a cycle
  }
  return clipped(text, max);
}
