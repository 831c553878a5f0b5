// thoth-pbx admin panel: the little JavaScript the pages use (no framework, no build).
// Pages work without it; it adds copy buttons and confirmations of destructive actions.
"use strict";

function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  // plain-http panels on a LAN are not a secure context: the old way still works there
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  const ok = document.execCommand("copy");
  document.body.removeChild(area);
  return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const label = button.textContent;
  copyText(source.textContent.trim()).then(() => {
    button.textContent = button.dataset.copied;
    button.classList.add("done");
    setTimeout(() => { button.textContent = label; button.classList.remove("done"); }, 2000);
  }, () => {
    // cannot write the clipboard: select the text so Ctrl+C does it
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  });
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
