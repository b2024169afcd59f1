import type { Queryable } from './database.js';

/** Small key/value settings: admin password hash, product version, enrollment token hash. */
export class SettingsRepo {
  constructor(private readonly db: Queryable) {}

  async get(key: string): Promise<string | null> {
    return (await this.db.get<{ value: string }>('SELECT value FROM settings WHERE key = ?', [key]))?.value ?? null;
  }

  /** Stores the value unless the key has one; true when this call stored it (masters starting together: one wins). */
  async insertIfAbsent(key: string, value: string): Promise<boolean> {
    return (await this.db.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING', [key, value])).changes === 1;
  }

  async set(key: string, value: string): Promise<void> {
    await this.db.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [key, value]);
  }
}
