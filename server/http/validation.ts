import type { z } from 'zod';
import { ValidationError } from '../../lib/errors.js';

/** Parses input at the edge; the first problem becomes a ValidationError with its message. */
export function parse<T extends z.ZodType>(schema: T, input: unknown): z.infer<T> {
  const result = schema.safeParse(input);
  if (!result.success) throw new ValidationError(result.error.issues[0]?.message ?? 'invalid input');
  return result.data;
}
