// "Add an update": sends the form with XHR to show a progress bar, then the verdict.
// Without JavaScript the form posts normally and the page comes back with the verdict.
(function () {
  const form = document.getElementById('upload-form');
  if (!form) return;
  const bar = document.getElementById('progress-bar');
  const progress = document.getElementById('progress');
  const text = document.getElementById('progress-text');
  const verdict = document.getElementById('verdict');
  const button = document.getElementById('upload-button');

  function show(ok, message) {
    verdict.hidden = false;
    verdict.className = 'verdict ' + (ok ? 'ok' : 'bad');
    verdict.textContent = (ok ? '✔ ' : '✖ ') + message;
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/updates');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.setRequestHeader('X-CSRF-Token', form.dataset.csrf);
    progress.hidden = false;
    text.hidden = false;
    verdict.hidden = true;
    bar.style.width = '0%';
    button.disabled = true;
    xhr.upload.addEventListener('progress', (e) => {
      if (!e.lengthComputable) return;
      const pct = Math.floor((e.loaded / e.total) * 100);
      bar.style.width = pct + '%';
      text.textContent = pct < 100 ? 'Uploading… ' + pct + '%' : 'Checking the signature and certificates…';
    });
    xhr.addEventListener('load', () => {
      button.disabled = false;
      bar.style.width = '100%';
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 201) {
        text.textContent = 'Uploaded and verified.';
        show(true, 'The update package “' + body.name + '” is valid: ' + body.product + ' ' + body.version + ', signed by ' + body.signer + '.');
        form.reset();
      } else {
        text.textContent = 'Refused.';
        show(false, body.error || ('The master answered ' + xhr.status));
      }
    });
    xhr.addEventListener('error', () => {
      button.disabled = false;
      text.textContent = 'The upload was interrupted.';
      show(false, 'The connection to the master was lost during the upload; try again.');
    });
    xhr.send(data);
  });
})();
