import { z } from 'zod';

// Control characters (C0, DEL, C1): a name with them would garble pages, logs and CSV reports.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

export const packageNameSchema = z
  .string({ error: 'Give the update a name (1 to 100 characters)' })
  .transform((s) => s.trim())
  .refine((s) => s.length > 0, { error: 'Give the update a name (1 to 100 characters)' })
  .refine((s) => s.length <= 100, { error: 'The name must be at most 100 characters' })
  .refine((s) => !CONTROL.test(s), { error: 'The name must not contain control characters' });

export const idSchema = z.coerce
  .number({ error: 'The id must be a positive whole number' })
  .int({ error: 'The id must be a positive whole number' })
  .positive({ error: 'The id must be a positive whole number' });

export const loginSchema = z.object({
  username: z.string({ error: 'Enter the user name' }).max(200, { error: 'The user name is too long' }),
  password: z.string({ error: 'Enter the password' }).max(1024, { error: 'The password is too long' }),
  next: z.string().optional(),
});

export const productSchema = z.object({
  product: z.string({ error: 'Enter the product' }).trim(),
  version: z.string({ error: 'Enter the version' }).trim(),
});

export const passwordChangeSchema = z
  .object({
    current: z.string({ error: 'Enter the current password' }),
    next: z.string({ error: 'Enter the new password' }).min(12, { error: 'The new password must have at least 12 characters' }).max(1024),
    confirm: z.string({ error: 'Confirm the new password' }),
  })
  .refine((v) => v.next === v.confirm, { error: 'The two new passwords differ' });
