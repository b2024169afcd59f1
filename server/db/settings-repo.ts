import type { Queryable } from './database.js';

/** Small key/value settings: admin password hash, product version, enrollment token hash. */
export class SettingsRepo {
  constructor(private readonly db: Queryable) {}

  async get(key: string): Promise<string | null> {
    return (await this.db.get<{ value: string }>('SELECT value FROM settings WHERE key = ?', [key]))?.value ?? null;
  }

  async set(key: string, value: string): Promise<void> {
    await this.db.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [key, value]);
  }
}
