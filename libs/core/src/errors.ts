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
