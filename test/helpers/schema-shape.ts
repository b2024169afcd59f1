import type { Database } from '../../server/db/database.js';

/**
 * A database's schema as the repositories see it, written the same way whatever made it (the
 * legacy SQLite steps, knex's baseline on SQLite, or on PostgreSQL): per table, its columns (name,
 * integer or text, required, default, key), its unique column sets, its foreign keys, its checks.
 */
export type SchemaShape = Record<string, { columns: string[]; unique: string[]; foreign: string[]; checks: string[] }>;

const normalize = (text: string | null) => (text ?? '').toLowerCase().replace(/["`'\s]|::[a-z ]+/g, '');
const kind = (type: string) => (/int/i.test(type) ? 'integer' : /text|char/i.test(type) ? 'text' : type.toLowerCase());

/** The CHECK expressions of a CREATE TABLE statement, parentheses balanced. */
function checksOf(sql: string): string[] {
  const found: string[] = [];
  const re = /\bcheck\s*\(/gi;
  for (let m = re.exec(sql); m; m = re.exec(sql)) {
    let depth = 1;
    let i = re.lastIndex;
    for (; i < sql.length && depth > 0; i++) depth += sql[i] === '(' ? 1 : sql[i] === ')' ? -1 : 0;
    found.push(normalize(sql.slice(re.lastIndex, i - 1)));
  }
  return found.sort();
}

export async function sqliteShape(db: Database): Promise<SchemaShape> {
  const shape: SchemaShape = {};
  const tables = await db.all<{ name: string; sql: string }>("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name");
  for (const { name, sql } of tables) {
    const columns = await db.all<{ name: string; type: string; notnull: number; dflt_value: string | null; pk: number }>(`SELECT * FROM pragma_table_info('${name}')`);
    const indexes = await db.all<{ name: string; unique: number; origin: string }>(`SELECT * FROM pragma_index_list('${name}')`);
    const unique: string[] = [];
    // Keys are in the columns; a TEXT key has an index of its own, an INTEGER one none.
    for (const index of indexes.filter((i) => i.unique === 1 && i.origin !== 'pk')) {
      const cols = await db.all<{ name: string }>(`SELECT name FROM pragma_index_info('${index.name}') ORDER BY seqno`);
      unique.push(cols.map((c) => c.name).join(','));
    }
    const foreign = await db.all<{ table: string; from: string; to: string; on_delete: string }>(`SELECT * FROM pragma_foreign_key_list('${name}')`);
    shape[name] = {
      // A key column is required whether or not it says NOT NULL.
      columns: columns.map((c) => `${c.name} ${kind(c.type)}${c.notnull || c.pk ? ' required' : ''}${c.dflt_value === null ? '' : ` default ${normalize(c.dflt_value)}`}${c.pk ? ' key' : ''}`),
      unique: unique.sort(),
      foreign: foreign.map((f) => `${f.from}->${f.table}.${f.to} ${f.on_delete.toLowerCase()}`).sort(),
      checks: checksOf(sql),
    };
  }
  return shape;
}

export async function postgresShape(db: Database): Promise<SchemaShape> {
  const shape: SchemaShape = {};
  const columns = await db.all<{ table_name: string; column_name: string; data_type: string; is_nullable: string; column_default: string | null; key: number }>(
    `SELECT c.table_name, c.column_name, c.data_type, c.is_nullable, c.column_default,
       (SELECT COUNT(*) FROM information_schema.table_constraints tc JOIN information_schema.key_column_usage k ON k.constraint_name = tc.constraint_name AND k.table_name = tc.table_name
        WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_name = c.table_name AND k.column_name = c.column_name) AS key
     FROM information_schema.columns c WHERE c.table_schema = 'public' AND c.table_name <> 'propagator_migrations' ORDER BY c.table_name, c.ordinal_position`);
  for (const c of columns) {
    const table = (shape[c.table_name] ??= { columns: [], unique: [], foreign: [], checks: [] });
    // A serial key's default is its sequence: SQLite's autoincrement, not a default.
    const dflt = c.column_default === null || c.column_default.startsWith('nextval(') ? '' : ` default ${normalize(c.column_default)}`;
    table.columns.push(`${c.column_name} ${kind(c.data_type)}${c.is_nullable === 'NO' || c.key ? ' required' : ''}${dflt}${c.key ? ' key' : ''}`);
  }
  const constraints = await db.all<{ table_name: string; type: string; def: string }>(
    `SELECT rel.relname AS table_name, con.contype AS type, pg_get_constraintdef(con.oid) AS def
     FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid JOIN pg_namespace ns ON ns.oid = rel.relnamespace
     WHERE ns.nspname = 'public' AND rel.relname <> 'propagator_migrations'`);
  for (const c of constraints) {
    const table = shape[c.table_name];
    if (!table) continue;
    if (c.type === 'u') table.unique.push(normalize(/\((.*)\)/.exec(c.def)?.[1] ?? ''));
    if (c.type === 'f') {
      const m = /FOREIGN KEY \((\w+)\) REFERENCES (\w+)\((\w+)\)(?: ON DELETE (SET NULL|CASCADE))?/.exec(c.def);
      if (m) table.foreign.push(`${m[1]}->${m[2]}.${m[3]} ${(m[4] ?? 'no action').toLowerCase()}`);
    }
    if (c.type === 'c') table.checks.push(pgCheck(c.def));
  }
  for (const t of Object.values(shape)) {
    t.unique.sort();
    t.foreign.sort();
    t.checks.sort();
  }
  return shape;
}

/** "CHECK ((state = ANY (ARRAY['a'::text, 'b'::text])))" → "statein(a,b)", as SQLite's "state in ('a','b')" normalizes. */
function pgCheck(def: string): string {
  const body = def.replace(/^CHECK\s*\(/, '').replace(/\)$/, '');
  const anyArray = /^\(*(\w+) = ANY \(+ARRAY\[(.*)\]\)+$/.exec(body);
  if (anyArray) return normalize(`${anyArray[1]} in (${anyArray[2]})`);
  return normalize(body.replace(/^\((.*)\)$/, '$1'));
}
