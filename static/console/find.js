// Past the 500 queues or exchanges a `stats` frame lists, the forms' choices come
// from the HTTP API: a find field beside each select (shown only then) asks for the
// names containing what is typed (`GET /api/queues/?name=…`, one page), and the
// select offers those until the field is cleared; then the frames fill it again.

import { api } from "./api.js";
import { setOptions } from "./forms.js";

const PAGE_SIZE = 100;
const WAIT_MS = 250;

const finderOf = (select) => select.parentElement.querySelector("input[data-find]");

// Is this select's list the find field's answer (not to be refilled from a frame)?
export function finding(select) {
  const find = finderOf(select);
  return Boolean(find && find.value.trim());
}

// Show the find fields of the kinds the frame does not list whole.
export function showFinders(frame) {
  if (!frame.totals) return;
  for (const find of document.querySelectorAll("input[data-find]")) {
    const kind = find.dataset.find;
    find.hidden = !find.value && !(frame.totals[kind] > (frame[kind] || []).length);
  }
}

// The select's options for the names found, as the frames would give them.
function choices(select, items) {
  switch (select.dataset.options) {
    case "queues": // a connection's private queue is no choice of these forms
      return items.filter((q) => !q.exclusive).map((q) => ({ value: q.name, label: q.name }));
    case "exchanges-all":
      return items.map((x) => ({ value: x.name, label: x.name === "amq.default" ? "(default)" : x.name }));
    default: // no binding to or from the default exchange
      return items.filter((x) => x.name !== "amq.default").map((x) => ({ value: x.name, label: x.name }));
  }
}

export function startFinders() {
  for (const find of document.querySelectorAll("input[data-find]")) {
    const select = find.parentElement.querySelector("select");
    let timer = null;
    let asked = 0; // the latest ask; an older answer that comes later is dropped
    find.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const text = find.value.trim();
        const mine = ++asked;
        if (!text) return;
        let found;
        try {
          found = (await api.findNames(find.dataset.find, text, PAGE_SIZE)).data;
        } catch (error) {
          if (mine === asked) find.title = `${error.code}: ${error.message}`;
          return;
        }
        if (mine !== asked) return;
        const options = choices(select, found.items);
        setOptions(select, options);
        find.title = `${options.length} shown of ${found.filtered_count} found`;
        select.dispatchEvent(new Event("change"));
      }, WAIT_MS);
    });
  }
}
