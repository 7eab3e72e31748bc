// Clients: the connected clients in a table that a search box filters (client id, username,
// peer address, listener), a detail page per client (its session and subscriptions), and
// kicking a client after a confirmation (DELETE /clients/{id}: DISCONNECT 0x98 on MQTT 5.0).

import { all, call } from "./api.js";
import { confirmAction, duration, fields, h, notice, table } from "./dom.js";

const REFRESH_MS = 5000;

export function renderClients(main, params) {
  const search = h("input", { type: "search", id: "client-search", placeholder:
    "Search client id, username, address or listener", "aria-label": "Search clients",
    value: params.get("q") || "" });
  const count = h("span", { class: "muted", id: "client-count" });
  const box = h("div", { id: "clients-table" }, h("p", { class: "muted" }, "Loading…"));
  const flashBox = h("div", { id: "clients-flash" });
  const kicked = (message) => { flashBox.replaceChildren(message); refresh(); };
  let items = [];

  const show = () => {
    const needle = search.value.trim().toLowerCase();
    const chosen = needle ? items.filter((c) => [c.client_id, c.username || "", c.peer,
      c.listener].some((text) => text.toLowerCase().includes(needle))) : items;
    count.textContent = `${chosen.length} of ${items.length} connected`;
    box.replaceChildren(table([
      ["Client id", (c) => h("a", { href: `#/clients/${encodeURIComponent(c.client_id)}`,
                                    class: "client-link" }, c.client_id)],
      ["Username", (c) => c.username ?? "—"], ["Listener", (c) => c.listener],
      ["MQTT", (c) => c.protocol], ["Address", (c) => c.peer],
      ["Connected", (c) => new Date(c.connected_at).toLocaleString()],
      ["Subs", (c) => c.subscriptions], ["Inflight", (c) => c.inflight],
      ["Queued", (c) => c.queued],
      ["", (c) => h("button", { class: "danger kick", type: "button",
                              onclick: () => kick(c.client_id, kicked) }, "Kick")]],
    chosen, needle ? "No connected client matches." : "No client is connected."));
  };
  const refresh = async () => {
    try {
      items = await all("/clients");
      show();
    } catch (err) {
      box.replaceChildren(h("p", { class: "error" }, err.message));
    }
  };
  search.addEventListener("input", show);
  main.replaceChildren(h("h1", {}, "Clients"), flashBox,
    h("div", { class: "toolbar" }, search, count,
      h("button", { class: "secondary", type: "button", onclick: refresh }, "Refresh")),
    h("div", { class: "card" }, box));
  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}

async function kick(clientId, after) {
  if (!await confirmAction(`Kick client "${clientId}"? Its connection is closed (MQTT 5.0: ` +
      "DISCONNECT 0x98, administrative action); its will is published.", "Kick")) return;
  try {
    await call(`/clients/${encodeURIComponent(clientId)}`, { method: "DELETE" });
    after(notice(`Client "${clientId}" was kicked.`, "ok"));
  } catch (err) {
    after(notice(`Kick failed: ${err.message}`, "error"));
  }
}

export function renderClient(main, clientId) {
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const status = h("div", { id: "client-status" });
  main.replaceChildren(h("p", {}, h("a", { href: "#/clients" }, "← Clients")),
    h("h1", {}, "Client ", h("code", {}, clientId)), status, box);

  const load = async () => {
    let c;
    try {
      c = await call(`/clients/${encodeURIComponent(clientId)}`);
    } catch (err) {
      box.replaceChildren(notice(err.status === 404 ? "This client is not connected."
        : err.message, err.status === 404 ? "" : "error"));
      return;
    }
    const s = c.session;
    box.replaceChildren(
      h("div", { class: "toolbar" }, h("button", { class: "danger kick", type: "button",
        id: "kick", onclick: () => kick(clientId, (message) => {
          status.replaceChildren(message);
          load();
        }) }, "Kick client")),
      h("div", { class: "row" },
        h("div", { class: "card" }, h("h2", {}, "Connection"), fields([
          ["Username", c.username], ["Listener", c.listener], ["MQTT", c.protocol],
          ["Address", c.peer], ["Connected at", new Date(c.connected_at).toLocaleString()],
          ["Keep alive", `${c.keepalive} s`], ["Certificate", c.certificate_identity]])),
        h("div", { class: "card" }, h("h2", {}, "Session"), s ? fields([
          ["Expires", s.expiry_interval === null ? "never" : s.expiry_interval === 0
            ? "at disconnect" : `${duration(s.expiry_interval)} after disconnect`],
          ["Inflight", `${s.inflight} of ${s.inflight_maximum}`],
          ["Awaiting PUBREL", s.awaiting_pubrel],
          ["Queued", `${s.queued} of ${s.queued_maximum} (${s.queued_bytes} bytes)`],
          ["Dropped", s.dropped], ["Will", s.will ? "yes" : "no"]]) : "No session.")),
      h("div", { class: "card spaced" }, h("h2", {}, "Subscriptions"),
        table([["Topic filter", (x) => h("code", {}, x.topic_filter)], ["QoS", (x) => x.qos],
          ["No local", (x) => (x.no_local ? "yes" : "")],
          ["Retain as published", (x) => (x.retain_as_published ? "yes" : "")],
          ["Shared group", (x) => x.shared_group ?? ""]],
        s ? s.subscription_list : [], "No subscription.")));
  };
  load();
  return () => {};
}
