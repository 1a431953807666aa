// Past the 500 queues or exchanges a `stats` frame lists, the forms' choices come
// from the HTTP API: a find field beside each select (shown only then) asks for the
// names containing what is typed (`GET /api/queues/?name=…`, one page), and the
// select offers those until the field is cleared; then the frames fill it again.

import { api } from "./api.js";
import { setOptions } from "./forms.js";

const PAGE_SIZE = 100;
const WAIT_MS = 250;

// The find field follows its select's label.
const finderOf = (select) => {
  const next = select.closest("label").nextElementSibling;
  return next && next.matches("input[data-find]") ? next : null;
};

// Is this select's list the find field's answer (not to be refilled from a frame)?
export function finding(select) {
  const find = finderOf(select);
  return Boolean(find && find.value.trim());
}

// Show the find fields of the kinds the frame leaves some out of (a field that holds a
// text stays, to be cleared). Declared queues are listed before private ones: when a
// private one is listed, every declared one is.
export function showFinders(frame) {
  if (!frame.totals) return;
  const listed = { queues: frame.queues || [], exchanges: frame.exchanges || [] };
  const partial = {
    queues: frame.totals.queues > listed.queues.length && !listed.queues.some((q) => q.exclusive),
    exchanges: frame.totals.exchanges > listed.exchanges.length,
  };
  for (const find of document.querySelectorAll("input[data-find]")) {
    find.hidden = !find.value && !partial[find.dataset.find];
  }
}

// The select's options for the names found, as the frames would give them.
function choices(select, items) {
  switch (select.dataset.options) {
    case "queues":
      return items.map((q) => ({ value: q.name, label: q.name }));
    case "exchanges-all":
      return items.map((x) => ({ value: x.name, label: x.name === "amq.default" ? "(default)" : x.name }));
    default: // no binding to or from the default exchange
      return items.filter((x) => x.name !== "amq.default").map((x) => ({ value: x.name, label: x.name }));
  }
}

// `refill(select)`: fill a select from the last frame again (its find field was cleared).
export function startFinders(refill) {
  for (const find of document.querySelectorAll("input[data-find]")) {
    const select = find.previousElementSibling.querySelector("select");
    const slot = select.form.querySelector(`[data-error-for="${CSS.escape(select.name)}"]`);
    let timer = null;
    let asked = 0; // the latest text's ask: the answer to an older one is dropped

    async function lookUp() {
      clearTimeout(timer);
      const text = find.value.trim();
      const mine = ++asked;
      if (slot) slot.textContent = "";
      if (!text) {
        find.title = "";
        refill(select);
        return;
      }
      let found;
      try {
        found = (await api.findNames(find.dataset.find, text, PAGE_SIZE)).data;
      } catch (error) {
        if (mine !== asked) return;
        setOptions(select, []); // nothing stale to submit
        if (slot) slot.textContent = `${error.code}: ${error.message}`;
        return;
      }
      if (mine !== asked) return;
      const options = choices(select, found.items);
      setOptions(select, options);
      find.title = `${options.length} shown of ${found.filtered_count} found`;
      if (slot && !options.length) slot.textContent = `no ${find.dataset.find} named like “${text}”`;
    }

    find.addEventListener("input", () => {
      clearTimeout(timer);
      asked += 1; // an answer on its way is for an older text now
      timer = setTimeout(lookUp, WAIT_MS);
    });
    find.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      event.preventDefault(); // not the form's submit, with the choice from before the text
      lookUp();
    });
  }
}
