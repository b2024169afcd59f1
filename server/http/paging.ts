/** Search and pagination of long lists, done on the server so pages work without JavaScript. */
export interface Page<T> {
  items: T[];
  page: number;
  pages: number;
  total: number;
  q: string;
}

/** `page` and `q` come validated (query-schemas.ts); a page past the end shows the last one. */
export function paginate<T>(all: T[], options: { page: number | undefined; q: string | undefined; size: number; text: (item: T) => string }): Page<T> {
  const q = options.q?.trim() ?? '';
  const needle = q.toLowerCase();
  const matching = needle ? all.filter((item) => options.text(item).toLowerCase().includes(needle)) : all;
  const pages = Math.max(1, Math.ceil(matching.length / options.size));
  const page = Math.min(pages, options.page ?? 1);
  return { items: matching.slice((page - 1) * options.size, page * options.size), page, pages, total: matching.length, q };
}
