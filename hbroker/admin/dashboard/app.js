// The dashboard's entry point: login, the pages (one module each), hash routing
// (#/overview, #/clients, #/clients/ID, #/sessions, #/subscriptions, #/retained, #/try).

import { ApiError, call, forgetToken, setToken, token, whenUnauthorised } from "./api.js";
import { renderClient, renderClients } from "./clients.js";
import { renderRetained, renderSessions, renderSubscriptions } from "./lists.js";
import { renderOverview, startSampling, stopSampling } from "./overview.js";
import { renderTry } from "./try.js";

const PAGES = {
  overview: renderOverview, clients: renderClients, sessions: renderSessions,
  subscriptions: renderSubscriptions, retained: renderRetained, try: renderTry,
};
let leave = () => {};

function showLogin(message) {
  stopSampling();
  leave();
  leave = () => {};
  document.getElementById("app").hidden = true;
  document.getElementById("login").hidden = false;
  const error = document.getElementById("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  document.getElementById("token").focus();
}

async function enter() {
  const broker = await call("/broker");
  document.getElementById("broker-name").textContent = `${broker.node} · ${broker.version}`;
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  startSampling();
  route();
}

function route() {
  if (!token()) return;
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...rest] = path.split("/");
  const params = new URLSearchParams(query);
  const page = PAGES[name] ? name : "overview";
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
  }
  leave();
  const main = document.getElementById("main");
  if (page === "clients" && rest.length) {
    leave = renderClient(main, decodeURIComponent(rest.join("/")));
  } else {
    leave = PAGES[page](main, params);
  }
  document.title = `hbroker · ${page}`;
}

whenUnauthorised(() => {
  forgetToken();
  showLogin("The token was refused: log in again.");
});

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  const button = document.getElementById("login-button");
  button.disabled = true;
  try {
    await call("/broker", { as: input.value.trim() });
    setToken(input.value.trim());
    input.value = "";
    await enter();
  } catch (err) {
    showLogin(err instanceof ApiError && err.status === 401
      ? "Wrong token: the broker refused it." : `Cannot log in: ${err.message}`);
  } finally {
    button.disabled = false;
  }
});

document.getElementById("logout").addEventListener("click", () => {
  forgetToken();
  showLogin("");
});

window.addEventListener("hashchange", route);

if (token()) {
  enter().catch((err) => showLogin(err instanceof ApiError && err.status === 401
    ? "The token was refused: log in again." : `Cannot reach the broker: ${err.message}`));
} else {
  showLogin("");
}
