/**
 * Schema versions, applied in order at start (PRAGMA user_version records the last one).
 * Never edit a released migration: add a new one.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'packages, servers, sessions, settings',
    sql: `
      CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
      );
      CREATE TABLE packages (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        name             TEXT NOT NULL UNIQUE,
        product          TEXT NOT NULL,
        version          TEXT NOT NULL,
        size             INTEGER NOT NULL,
        sha256           TEXT NOT NULL UNIQUE,
        payload_size     INTEGER NOT NULL,
        payload_sha256   TEXT NOT NULL,
        manifest_json    TEXT NOT NULL,
        signer_subject   TEXT NOT NULL,
        chain_json       TEXT NOT NULL,
        signer_not_after TEXT NOT NULL,
        expires          TEXT,
        min_version      TEXT,
        description      TEXT,
        state            TEXT NOT NULL CHECK (state IN ('storing', 'valid', 'missing')),
        uploaded_by      TEXT NOT NULL,
        uploaded_at      TEXT NOT NULL
      );
      CREATE TABLE servers (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        name            TEXT NOT NULL UNIQUE,
        mode            TEXT NOT NULL CHECK (mode IN ('bidirectional', 'mailbox')),
        address         TEXT,
        product         TEXT,
        version         TEXT,
        secret_hash     TEXT NOT NULL,
        staged_json     TEXT NOT NULL DEFAULT '[]',
        free_disk_bytes INTEGER,
        last_seen       TEXT,
        enrolled_at     TEXT NOT NULL
      );
      CREATE TABLE sessions (
        id_hash    TEXT PRIMARY KEY,
        csrf_token TEXT NOT NULL,
        username   TEXT,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
      );
      CREATE INDEX sessions_expiry ON sessions (expires_at);
    `,
  },
  {
    version: 2,
    name: 'commands for agents',
    sql: `
      CREATE TABLE commands (
        id              TEXT PRIMARY KEY,
        server_id       INTEGER REFERENCES servers (id) ON DELETE SET NULL,
        server_name     TEXT NOT NULL,
        type            TEXT NOT NULL CHECK (type IN ('propagate', 'apply')),
        package_id      INTEGER REFERENCES packages (id) ON DELETE SET NULL,
        package_name    TEXT NOT NULL,
        package_sha256  TEXT NOT NULL,
        package_size    INTEGER NOT NULL,
        product         TEXT NOT NULL,
        version         TEXT NOT NULL,
        allow_downgrade INTEGER NOT NULL DEFAULT 0,
        state           TEXT NOT NULL CHECK (state IN ('queued', 'delivered', 'running', 'succeeded', 'failed', 'cancelled', 'timedout')),
        message         TEXT NOT NULL DEFAULT '',
        version_before  TEXT,
        version_after   TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        created_at      TEXT NOT NULL,
        delivered_at    TEXT,
        started_at      TEXT,
        finished_at     TEXT,
        updated_at      TEXT NOT NULL
      );
      CREATE INDEX commands_server_state ON commands (server_id, state);
      CREATE INDEX commands_package_state ON commands (package_id, state);
    `,
  },
  {
    version: 3,
    name: 'operations, target deadlines, held targets, state history',
    sql: `
      CREATE TABLE operations (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        action          TEXT NOT NULL CHECK (action IN ('propagate', 'apply')),
        package_id      INTEGER REFERENCES packages (id) ON DELETE SET NULL,
        package_name    TEXT NOT NULL,
        product         TEXT NOT NULL,
        version         TEXT NOT NULL,
        allow_downgrade INTEGER NOT NULL DEFAULT 0,
        state           TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled')),
        created_by      TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        finished_at     TEXT,
        retry_of        INTEGER REFERENCES operations (id) ON DELETE SET NULL
      );
      CREATE INDEX operations_state ON operations (state, id);

      -- SQLite cannot change a CHECK constraint: the commands table is rebuilt with the new state.
      CREATE TABLE commands_v3 (
        id              TEXT PRIMARY KEY,
        operation_id    INTEGER REFERENCES operations (id) ON DELETE CASCADE,
        server_id       INTEGER REFERENCES servers (id) ON DELETE SET NULL,
        server_name     TEXT NOT NULL,
        type            TEXT NOT NULL CHECK (type IN ('propagate', 'apply')),
        package_id      INTEGER REFERENCES packages (id) ON DELETE SET NULL,
        package_name    TEXT NOT NULL,
        package_sha256  TEXT NOT NULL,
        package_size    INTEGER NOT NULL,
        product         TEXT NOT NULL,
        version         TEXT NOT NULL,
        allow_downgrade INTEGER NOT NULL DEFAULT 0,
        state           TEXT NOT NULL CHECK (state IN ('held', 'queued', 'delivered', 'running', 'succeeded', 'failed', 'cancelled', 'timedout')),
        message         TEXT NOT NULL DEFAULT '',
        version_before  TEXT,
        version_after   TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        deadline_at     TEXT,
        created_at      TEXT NOT NULL,
        delivered_at    TEXT,
        started_at      TEXT,
        finished_at     TEXT,
        updated_at      TEXT NOT NULL
      );
      INSERT INTO commands_v3 (id, server_id, server_name, type, package_id, package_name, package_sha256, package_size, product, version,
          allow_downgrade, state, message, version_before, version_after, attempts, next_attempt_at, created_at, delivered_at, started_at, finished_at, updated_at)
        SELECT id, server_id, server_name, type, package_id, package_name, package_sha256, package_size, product, version,
          allow_downgrade, state, message, version_before, version_after, attempts, next_attempt_at, created_at, delivered_at, started_at, finished_at, updated_at
        FROM commands;
      DROP TABLE commands;
      ALTER TABLE commands_v3 RENAME TO commands;
      CREATE INDEX commands_server_state ON commands (server_id, state);
      CREATE INDEX commands_package_state ON commands (package_id, state);
      CREATE INDEX commands_operation ON commands (operation_id, state);
      CREATE INDEX commands_open_deadline ON commands (state, deadline_at);

      CREATE TABLE command_events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        command_id TEXT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
        state      TEXT NOT NULL,
        message    TEXT NOT NULL,
        at         TEXT NOT NULL
      );
      CREATE INDEX command_events_command ON command_events (command_id, id);
    `,
  },
  {
    version: 4,
    name: 'payload checksum of each command',
    sql: `
      -- What the slave checks the verified manifest against (the package's payload SHA-256).
      ALTER TABLE commands ADD COLUMN payload_sha256 TEXT NOT NULL DEFAULT '';
      UPDATE commands SET payload_sha256 = COALESCE((SELECT p.payload_sha256 FROM packages p WHERE p.id = commands.package_id), '');
    `,
  },
];
