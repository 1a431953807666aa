// Showing the API's errors where they belong: next to the field named in
// `fields` ([data-error-for=<field>] inside the form), else as a form-level
// message ([data-error-for=__form__]). Always "code: message".

export function clearErrors(root) {
  for (const el of root.querySelectorAll("[data-error-for]")) el.textContent = "";
  for (const el of root.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const ok = root.querySelector(".form-ok");
  if (ok) ok.textContent = "";
}

export function showError(root, error, formSlot = "__form__") {
  clearErrors(root);
  if (!error.code) error = { code: "error", message: String(error.message || error) }; // a bug, not the API
  const fields = error.fields || {};
  let placed = false;
  for (const [field, problems] of Object.entries(fields)) {
    const slot = root.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
    if (!slot) continue;
    const text = Array.isArray(problems) ? problems.join("; ") : String(problems);
    slot.textContent = `${error.code}: ${text}`;
    const input = root.querySelector(`[name="${CSS.escape(field)}"]`);
    if (input) input.setAttribute("aria-invalid", "true");
    placed = true;
  }
  if (!placed) {
    const slot = root.querySelector(`[data-error-for="${formSlot}"]`);
    if (slot) slot.textContent = `${error.code}: ${error.message}`;
  }
}

export function showOk(root, text) {
  clearErrors(root);
  const ok = root.querySelector(".form-ok");
  if (ok) ok.textContent = text;
}

// Parse a JSON field; a local `invalid` error in the API's shape when it is not JSON.
export function jsonField(input, { object = false } = {}) {
  const name = input.name;
  const raw = input.value.trim();
  let value;
  try {
    value = JSON.parse(raw === "" && object ? "{}" : raw);
  } catch (err) {
    throw { code: "invalid", message: `${name}: not JSON`, fields: { [name]: [`not valid JSON (${err.message})`] } };
  }
  if (object && (value === null || typeof value !== "object" || Array.isArray(value))) {
    throw { code: "invalid", message: `${name}: must be an object`, fields: { [name]: ["must be a JSON object"] } };
  }
  return value;
}

// Replace a <select>'s options, keeping the current choice when it still exists.
export function setOptions(select, options) {
  const current = select.value;
  const same =
    select.options.length === options.length &&
    options.every((o, i) => select.options[i].value === o.value && select.options[i].textContent === o.label);
  if (same) return;
  select.replaceChildren(
    ...options.map((o) => {
      const option = document.createElement("option");
      option.value = o.value;
      option.textContent = o.label;
      return option;
    }),
  );
  if (options.some((o) => o.value === current)) select.value = current;
}
