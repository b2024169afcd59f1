import type { Knex } from 'knex';

/**
 * The schema, once for SQLite and PostgreSQL, written with knex's schema builder (which speaks
 * both dialects). A new database gets the baseline (version 7, the schema SQLite databases reached
 * through sqlite-legacy-migrations.ts), then each migration after it in order. Never edit a
 * released migration: add a new one. Timestamps are ISO 8601 text in UTC on both engines, so they
 * compare as text; sizes are bigint (packages may exceed 2 GiB).
 */
export interface Migration {
  version: number;
  name: string;
  /** Builders whose statements (knex's toSQL) make the step; run in one transaction. */
  up(knex: Knex): (Knex.SchemaBuilder | Knex.QueryBuilder)[];
}

export const BASELINE_VERSION = 7;

const COMMAND_STATES = ['held', 'queued', 'delivered', 'running', 'succeeded', 'failed', 'cancelled', 'timedout'];
const MODES = ['bidirectional', 'mailbox'];

function baseline(schema: Knex.SchemaBuilder): Knex.SchemaBuilder {
  return schema
    .createTable('settings', (t) => {
      t.text('key').primary();
      t.text('value').notNullable();
    })
    .createTable('packages', (t) => {
      t.increments('id');
      t.text('name').notNullable().unique();
      t.text('product').notNullable();
      t.text('version').notNullable();
      t.bigInteger('size').notNullable();
      t.text('sha256').notNullable().unique();
      t.bigInteger('payload_size').notNullable();
      t.text('payload_sha256').notNullable();
      t.text('manifest_json').notNullable();
      t.text('signer_subject').notNullable();
      t.text('chain_json').notNullable();
      t.text('signer_not_after').notNullable();
      t.text('expires');
      t.text('min_version');
      t.text('description');
      t.text('state').notNullable().checkIn(['storing', 'valid', 'missing']);
      t.text('uploaded_by').notNullable();
      t.text('uploaded_at').notNullable();
      t.text('manifest_sha256').notNullable().defaultTo('');
    })
    .createTable('servers', (t) => {
      t.increments('id');
      t.text('name').notNullable().unique();
      t.text('mode').notNullable().checkIn(MODES);
      t.text('address');
      t.text('product');
      t.text('version');
      // Agent secrets are gone (agents have keys): kept empty, so the legacy schema and this one agree.
      t.text('secret_hash').notNullable();
      t.text('staged_json').notNullable().defaultTo('[]');
      t.bigInteger('free_disk_bytes');
      t.text('last_seen');
      t.text('enrolled_at').notNullable();
      t.text('public_key');
      t.text('key_fingerprint');
      t.text('requested_from');
      t.text('accepted_by');
      t.text('accepted_at');
      t.text('requested_mode').checkIn(MODES);
      t.text('requested_address');
      t.text('change_state').checkIn(['pending', 'rejected']);
      t.bigInteger('clock_offset_ms');
    })
    .createTable('sessions', (t) => {
      t.text('id_hash').primary();
      t.text('csrf_token').notNullable();
      t.text('username');
      t.text('created_at').notNullable();
      t.text('expires_at').notNullable();
      t.index(['expires_at'], 'sessions_expiry');
    })
    .createTable('operations', (t) => {
      t.increments('id');
      t.text('action').notNullable().checkIn(['propagate', 'apply']);
      t.integer('package_id').references('id').inTable('packages').onDelete('SET NULL');
      t.text('package_name').notNullable();
      t.text('product').notNullable();
      t.text('version').notNullable();
      t.integer('allow_downgrade').notNullable().defaultTo(0);
      t.text('state').notNullable().checkIn(['running', 'succeeded', 'failed', 'cancelled']);
      t.text('created_by').notNullable();
      t.text('created_at').notNullable();
      t.text('finished_at');
      t.integer('retry_of').references('id').inTable('operations').onDelete('SET NULL');
      t.index(['state', 'id'], 'operations_state');
    })
    .createTable('commands', (t) => {
      t.text('id').primary();
      t.integer('operation_id').references('id').inTable('operations').onDelete('CASCADE');
      t.integer('server_id').references('id').inTable('servers').onDelete('SET NULL');
      t.text('server_name').notNullable();
      t.text('type').notNullable().checkIn(['propagate', 'apply']);
      t.integer('package_id').references('id').inTable('packages').onDelete('SET NULL');
      t.text('package_name').notNullable();
      t.text('package_sha256').notNullable();
      t.bigInteger('package_size').notNullable();
      t.text('product').notNullable();
      t.text('version').notNullable();
      t.integer('allow_downgrade').notNullable().defaultTo(0);
      t.text('state').notNullable().checkIn(COMMAND_STATES);
      t.text('message').notNullable().defaultTo('');
      t.text('version_before');
      t.text('version_after');
      t.integer('attempts').notNullable().defaultTo(0);
      t.text('next_attempt_at');
      t.text('deadline_at');
      t.text('created_at').notNullable();
      t.text('delivered_at');
      t.text('started_at');
      t.text('finished_at');
      t.text('updated_at').notNullable();
      t.text('payload_sha256').notNullable().defaultTo('');
      t.text('manifest_sha256').notNullable().defaultTo('');
      t.index(['server_id', 'state'], 'commands_server_state');
      t.index(['package_id', 'state'], 'commands_package_state');
      t.index(['operation_id', 'state'], 'commands_operation');
      t.index(['state', 'deadline_at'], 'commands_open_deadline');
    })
    .createTable('command_events', (t) => {
      t.increments('id');
      t.text('command_id').notNullable().references('id').inTable('commands').onDelete('CASCADE');
      t.text('state').notNullable();
      t.text('message').notNullable();
      t.text('at').notNullable();
      t.index(['command_id', 'id'], 'command_events_command');
    })
    .createTable('server_requests', (t) => {
      t.increments('id');
      t.text('name').notNullable();
      t.text('state').notNullable().checkIn(['pending', 'rejected']);
      t.text('mode').notNullable().checkIn(MODES);
      t.text('address');
      t.text('product');
      t.text('version');
      t.text('public_key').notNullable();
      t.text('key_fingerprint').notNullable();
      t.text('requested_from');
      t.text('requested_at').notNullable();
      t.text('decided_by');
      t.text('decided_at');
      t.unique(['name', 'key_fingerprint']);
      t.index(['state', 'requested_at'], 'server_requests_state');
    })
    .createTable('enroll_tokens', (t) => {
      t.increments('id');
      t.text('name').notNullable();
      t.text('token_hash').notNullable().unique();
      t.text('created_by').notNullable();
      t.text('created_at').notNullable();
      t.text('expires_at').notNullable();
      t.text('used_at');
      t.integer('server_id').references('id').inTable('servers').onDelete('SET NULL');
    })
    // /health updates this one row: a database that answers reads may still refuse writes.
    .createTable('health_check', (t) => {
      t.integer('id').primary();
      t.check('?? = 1', ['id']);
      t.text('checked_at').notNullable();
    });
}

export const BASELINE: Migration = {
  version: BASELINE_VERSION,
  name: 'baseline: packages, servers, sessions, settings, commands, operations, admission, health check',
  up: (knex) => [baseline(knex.schema), knex('health_check').insert({ id: 1, checked_at: '' })],
};

/** Versions after the baseline, for both engines. */
export const MIGRATIONS: Migration[] = [
  {
    version: 8,
    name: 'challenges and call nonces spent, shared by several masters',
    // Used on PostgreSQL only (one SQLite master keeps them in memory); expires_at in ms since 1970.
    up: (knex) => [knex.schema.createTable('spent_tokens', (t) => {
      t.text('key').primary();
      t.bigInteger('expires_at').notNullable();
      t.index(['expires_at'], 'spent_tokens_expiry');
    })],
  },
  {
    version: 9,
    name: 'the masters alive, and which master is storing a package',
    // Several masters: each writes its row every second; a package row 'storing' for a master no
    // longer alive was left by a master that died mid-upload. seen_at in ms since 1970.
    up: (knex) => [
      knex.schema.createTable('masters', (t) => {
        t.text('id').primary();
        t.text('name').notNullable();
        t.bigInteger('seen_at').notNullable();
      }),
      knex.schema.alterTable('packages', (t) => {
        t.text('stored_by');
      }),
    ],
  },
];
