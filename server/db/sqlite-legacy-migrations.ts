/**
 * The SQLite schema as it grew up to version 7, before PostgreSQL: databases made by Propagator
 * 0.2 and older climb these steps (PRAGMA user_version records the last one). A new database
 * starts from the baseline of schema.ts instead, and every version after 7 is written there, once
 * for both engines. Never edit these: a test checks that they and the baseline give one schema.
 */
export interface LegacyMigration {
  version: number;
  name: string;
  sql: string;
}

export const SQLITE_LEGACY_MIGRATIONS: LegacyMigration[] = [
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
  {
    version: 5,
    name: 'admission of servers by key, one-time enrollment tokens, manifest digests',
    sql: `
      -- A server is a name and an agent key (Ed25519, made by the agent). Agent secrets are gone:
      -- agents enrolled before keys existed must enroll again, and wait for the administrator.
      ALTER TABLE servers ADD COLUMN public_key TEXT;
      ALTER TABLE servers ADD COLUMN key_fingerprint TEXT;
      ALTER TABLE servers ADD COLUMN requested_from TEXT;
      ALTER TABLE servers ADD COLUMN accepted_by TEXT;
      ALTER TABLE servers ADD COLUMN accepted_at TEXT;
      -- A mode or address the agent reports that differs from the accepted one: it changes only
      -- when the administrator accepts it (the master never calls an address an agent just claims).
      ALTER TABLE servers ADD COLUMN requested_mode TEXT CHECK (requested_mode IN ('bidirectional', 'mailbox'));
      ALTER TABLE servers ADD COLUMN requested_address TEXT;
      ALTER TABLE servers ADD COLUMN change_state TEXT CHECK (change_state IN ('pending', 'rejected'));
      UPDATE servers SET secret_hash = '';

      -- Enrollments waiting for the administrator (or refused by them): a new name, or a known name
      -- with another key. Accepting one creates the server, or gives the known server its new key.
      CREATE TABLE server_requests (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        name            TEXT NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'rejected')),
        mode            TEXT NOT NULL CHECK (mode IN ('bidirectional', 'mailbox')),
        address         TEXT,
        product         TEXT,
        version         TEXT,
        public_key      TEXT NOT NULL,
        key_fingerprint TEXT NOT NULL,
        requested_from  TEXT,
        requested_at    TEXT NOT NULL,
        decided_by      TEXT,
        decided_at      TEXT,
        UNIQUE (name, key_fingerprint)
      );
      CREATE INDEX server_requests_state ON server_requests (state, requested_at);

      CREATE TABLE enroll_tokens (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT NOT NULL,
        token_hash  TEXT NOT NULL UNIQUE,
        created_by  TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        expires_at  TEXT NOT NULL,
        used_at     TEXT,
        server_id   INTEGER REFERENCES servers (id) ON DELETE SET NULL
      );

      -- Commands carry the digest of the signed manifest: the agent stops a download at the first
      -- byte that differs from what was announced.
      ALTER TABLE packages ADD COLUMN manifest_sha256 TEXT NOT NULL DEFAULT '';
      ALTER TABLE commands ADD COLUMN manifest_sha256 TEXT NOT NULL DEFAULT '';
    `,
  },
  {
    version: 6,
    name: 'the clock offset of each slave',
    sql: `
      -- The slave's clock minus the master's (ms), measured from its calls and written when it
      -- moves by more than a second; NULL until measured.
      ALTER TABLE servers ADD COLUMN clock_offset_ms INTEGER;
    `,
  },
  {
    version: 7,
    name: 'a row the health check writes',
    sql: `
      -- /health updates this one row: a database that answers reads may still refuse writes
      -- (a disk turned read-only or full), and only a write tells.
      CREATE TABLE health_check (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at TEXT NOT NULL
      );
      INSERT INTO health_check (id, checked_at) VALUES (1, '');
    `,
  },
];
