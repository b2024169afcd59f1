import { z } from 'zod';
import type { OperationState, TargetState } from '../domain.js';

export const OPERATION_STATES = ['running', 'succeeded', 'failed', 'cancelled'] as const satisfies readonly OperationState[];
export const TARGET_STATES = ['pending', 'running', 'succeeded', 'failed', 'timedout', 'cancelled'] as const satisfies readonly TargetState[];

/**
 * The query parameters of the list routes. Each is given at most once (a repeated one arrives as a
 * list); numbers are plain digits within their range, so "1e309", "-1" or "abc" are refused
 * with the parameter's name and what it accepts instead of being coerced into nonsense.
 */
const once = (name: string) => ({ error: `"${name}" must be given once` });

function wholeNumber(name: string, min: number, max: number) {
  const message = { error: `"${name}" must be a whole number from ${min} to ${max}` };
  return z.string(once(name)).regex(/^\d{1,10}$/, message).transform(Number).refine((n) => n >= min && n <= max, message).optional();
}

function oneOf<T extends readonly [string, ...string[]]>(name: string, values: T) {
  return z.string(once(name))
    .refine((v) => v === '' || (values as readonly string[]).includes(v), { error: `"${name}" must be one of ${values.join(', ')} (or empty for all)` })
    .transform((v) => (v === '' ? undefined : (v as T[number])))
    .optional();
}

const page = wholeNumber('page', 1, 100_000);
const q = z.string(once('q')).max(100, { error: '"q" (the search text) must be at most 100 characters' }).optional();
/** A name echoed in a banner after a redirect ("Removed print-01"). */
const note = (name: string) => z.string(once(name)).max(200, { error: `"${name}" must be at most 200 characters` }).optional();

export const serversQuery = z.object({ page, q, removed: note('removed') });
export const updatesQuery = z.object({ deleted: note('deleted') });
export const operationsApiQuery = z.object({ state: oneOf('state', OPERATION_STATES), limit: wholeNumber('limit', 1, 500), offset: wholeNumber('offset', 0, 1_000_000_000) });
export const operationsPageQuery = z.object({ page, state: oneOf('state', OPERATION_STATES) });
export const operationPageQuery = z.object({ page, q, target: oneOf('target', TARGET_STATES) });
export const operationApiQuery = z.object({ download: z.string(once('download')).optional() });
