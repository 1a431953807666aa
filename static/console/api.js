// The HTTP API (docs/protocol.md, "HTTP API"), same-origin, with Django's CSRF token.
// Every failure resolves to the API's error shape {code, message, fields?}.

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return "";
}

export class ApiError extends Error {
  constructor({ code, message, fields }) {
    super(message);
    this.code = code;
    this.fields = fields || {};
  }
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = cookie("csrftoken");
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError({ code: "unavailable", message: `the broker did not answer (${err.message})` });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's page, Django's CSRF page): keep the status line.
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : { code: String(response.status), message: response.statusText || text.slice(0, 200) };
    throw new ApiError(error);
  }
  return { status: response.status, data };
}

const seg = (name) => encodeURIComponent(name);

export const api = {
  createExchange: (fields) => call("POST", "/api/exchanges/", fields),
  deleteExchange: (name) => call("DELETE", `/api/exchanges/${seg(name)}/`),
  createQueue: (fields) => call("POST", "/api/queues/", fields),
  deleteQueue: (name) => call("DELETE", `/api/queues/${seg(name)}/`),
  createBinding: (fields) => call("POST", "/api/bindings/", fields),
  deleteBinding: (id) => call("DELETE", `/api/bindings/${seg(id)}/`),
  // `destination` as in createBinding: {queue} or {destination_exchange}.
  listBindings: (exchange, destination) =>
    call("GET", `/api/bindings/?${new URLSearchParams({ exchange, ...destination })}`),
  // One page of the `kind` ("queues": declared ones only, or "exchanges") whose names contain `text`, in any case.
  findNames: (kind, text, pageSize) => {
    const query = { name: text, page_size: String(pageSize), ...(kind === "queues" ? { exclusive: "false" } : {}) };
    return call("GET", `/api/${kind}/?${new URLSearchParams(query)}`);
  },
  // The default exchange is `amq.default` in URLs (docs/protocol.md, "Names").
  publish: (exchange, fields) => call("POST", `/api/exchanges/${seg(exchange || "amq.default")}/publish/`, fields),
};
