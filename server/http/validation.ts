import type { z } from 'zod';
import { ValidationError } from '../../lib/errors.js';
import { BadRequestError } from '../errors.js';

/** Parses input at the edge; the first problem becomes a ValidationError with its message. */
export function parse<T extends z.ZodType>(schema: T, input: unknown): z.infer<T> {
  const result = schema.safeParse(input);
  if (!result.success) throw new ValidationError(result.error.issues[0]?.message ?? 'invalid input');
  return result.data;
}

/** Parses a query string at the edge: a bad parameter is a bad request (400), with its reason. */
export function parseQuery<T extends z.ZodType>(schema: T, query: unknown): z.infer<T> {
  const result = schema.safeParse(query);
  if (!result.success) throw new BadRequestError(result.error.issues[0]?.message ?? 'invalid query');
  return result.data;
}
