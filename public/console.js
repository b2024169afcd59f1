// Console niceties that need JavaScript; every page works without them.
(function () {
  // Dates in the browser's local time (the server renders ISO timestamps).
  for (const el of document.querySelectorAll('time[datetime]')) {
    const date = new Date(el.getAttribute('datetime'));
    if (!Number.isNaN(date.getTime())) {
      el.title = el.getAttribute('datetime');
      el.textContent = date.toLocaleString();
    }
  }
  // Ask before destructive actions.
  for (const form of document.querySelectorAll('form[data-confirm]')) {
    form.addEventListener('submit', (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
})();

// "All servers" ticks every server box (the server also understands "all" on its own).
(function () {
  const all = document.getElementById('all-servers');
  if (!all) return;
  all.addEventListener('change', () => {
    for (const box of document.querySelectorAll('input.server-choice')) box.checked = all.checked;
  });
})();

// Sortable tables: a click on a column heading sorts the rows shown (numbers, versions and dates
// by value); a second click reverses.
(function () {
  const key = (cell) => {
    const time = cell.querySelector('time[datetime]');
    if (time) return { t: Date.parse(time.getAttribute('datetime')) };
    const text = cell.textContent.trim();
    const version = /(\d+(?:\.\d+){0,3})$/.exec(text);
    if (/^\d+(\.\d+)?\s*(bytes|KiB|MiB|GiB|TiB|s)?$/.test(text)) {
      const [n, unit] = text.split(/\s+/);
      const scale = { KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 }[unit] || 1;
      return { n: parseFloat(n) * scale };
    }
    if (version && /^[a-z0-9._-]*\s?\d/.test(text)) return { s: text.replace(version[1], ''), v: version[1].split('.').map(Number) };
    return { s: text.toLowerCase() };
  };
  const compare = (a, b) => {
    if ('t' in a && 't' in b) return a.t - b.t;
    if ('n' in a && 'n' in b) return a.n - b.n;
    if ('v' in a && 'v' in b && a.s === b.s) {
      for (let i = 0; i < 4; i++) if ((a.v[i] || 0) !== (b.v[i] || 0)) return (a.v[i] || 0) - (b.v[i] || 0);
      return 0;
    }
    return String(a.s ?? '').localeCompare(String(b.s ?? ''));
  };
  for (const table of document.querySelectorAll('table.sortable')) {
    const headers = table.querySelectorAll('thead th');
    headers.forEach((th, index) => {
      if (!th.textContent.trim()) return;
      th.style.cursor = 'pointer';
      th.title = 'Sort by this column';
      th.addEventListener('click', () => {
        const ascending = th.getAttribute('aria-sort') !== 'ascending';
        headers.forEach((h) => h.removeAttribute('aria-sort'));
        th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort((r1, r2) => {
          const c = compare(key(r1.cells[index]), key(r2.cells[index]));
          return ascending ? c : -c;
        });
        for (const row of rows) body.appendChild(row);
      });
    });
  }
})();

// Filter boxes: hide the rows (or choices) that do not contain the text typed.
(function () {
  for (const input of document.querySelectorAll('input[data-filter]')) {
    const table = document.getElementById(input.dataset.filter);
    input.addEventListener('input', () => {
      const needle = input.value.trim().toLowerCase();
      for (const row of table.tBodies[0].rows) row.hidden = needle !== '' && !row.textContent.toLowerCase().includes(needle);
    });
  }
  for (const input of document.querySelectorAll('input[data-filter-choices]')) {
    input.addEventListener('input', () => {
      const needle = input.value.trim().toLowerCase();
      for (const label of document.querySelectorAll('label.choice')) label.hidden = needle !== '' && !label.textContent.toLowerCase().includes(needle);
    });
  }
})();
