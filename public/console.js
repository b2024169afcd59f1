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
