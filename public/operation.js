// The operation report updates itself while the operation runs: it polls the API every 2 s and
// reloads the page when what it shows is no longer current (a plain reload shows the same thing).
(function () {
  const root = document.getElementById('operation');
  if (!root || root.dataset.state !== 'running') return;
  const id = root.dataset.operationId;
  // The server renders the same signature, so a change made before the first poll counts too.
  const shown = root.dataset.signature;
  async function poll() {
    try {
      const res = await fetch('/api/operations/' + id, { headers: { Accept: 'application/json' } });
      if (res.ok) {
        const op = await res.json();
        const signature = JSON.stringify([op.state, op.counts, op.targets.map((t) => [t.state, t.message, t.versionAfter])]);
        if (signature !== shown) {
          window.location.reload();
          return;
        }
      }
    } catch {
      // The master may be restarting; try again at the next tick.
    }
    setTimeout(poll, 2000);
  }
  poll();
})();
