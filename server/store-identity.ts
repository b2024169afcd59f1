import { randomUUID } from 'node:crypto';
import { ConfigurationError } from '../lib/errors.js';
import type { PackagesRepo } from './db/packages-repo.js';
import type { SettingsRepo } from './db/settings-repo.js';
import type { PackageStore } from './package-store.js';

/**
 * Several masters on one database must share one store. A master started without the others'
 * --store (its own DATA/packages) would find every package's file missing and mark them so for
 * everyone: it refuses to start instead. The database names its store (settings store_id), the
 * store carries that name in a small file; a store without the mark is taken only while it and
 * the database hold no package.
 */
export async function checkStoreIdentity(store: PackageStore, settings: SettingsRepo, packages: PackagesRepo): Promise<void> {
  const found = await store.readMark();
  const created = await settings.insertIfAbsent('store_id', found ?? randomUUID());
  const expected = (await settings.get('store_id')) as string;
  if (found === expected) return;
  const empty = found === null && (await store.list()).length === 0 && (await packages.allSha256()).size === 0;
  if (found === null && (created || empty)) {
    await store.writeMark(expected);
    // Two masters marking a new store at once: both wrote, or read, the database's one name.
    if ((await store.readMark()) === expected) return;
  }
  throw new ConfigurationError(`the package store (${store.description}) is not the one this database's packages are in (${found === null ? 'it has no store mark' : `it is marked ${found}`}, the database's store is ${expected}): give every master the same --store`);
}
