// Sessions, subscriptions and retained messages: tables of the API's lists. Retained
// messages are browsed by an MQTT topic filter and deleted after a confirmation (the API
// publishes an empty retained message on the topic, as a client would).

import { all, call, topicPath } from "./api.js";
import { confirmAction, duration, h, notice, table } from "./dom.js";

function listPage(main, title, toolbar, load) {
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const flash = h("div", { class: "flash" });
  const refresh = async () => {
    try {
      box.replaceChildren(await load());
    } catch (err) {
      box.replaceChildren(h("p", { class: "error" }, err.message));
    }
  };
  main.replaceChildren(h("h1", {}, title), flash,
    h("div", { class: "toolbar" }, ...toolbar(refresh),
      h("button", { class: "secondary", type: "button", onclick: refresh }, "Refresh")),
    h("div", { class: "card" }, box));
  refresh();
  return { refresh, flash };
}

export function renderSessions(main) {
  const which = h("select", { "aria-label": "Which sessions" },
    h("option", { value: "" }, "All sessions"), h("option", { value: "true" }, "Online"),
    h("option", { value: "false" }, "Offline"));
  const prefix = h("input", { type: "search", placeholder: "Client id starts with",
                              "aria-label": "Client id prefix" });
  const page = listPage(main, "Sessions", (refresh) => {
    which.addEventListener("change", refresh);
    prefix.addEventListener("change", refresh);
    return [prefix, which];
  }, async () => {
    const params = {};
    if (which.value) params.connected = which.value;
    if (prefix.value) params.prefix = prefix.value;
    const items = await all("/sessions", params);
    return table([
      ["Client id", (s) => (s.connected ? h("a", { href: `#/clients/${encodeURIComponent(
        s.client_id)}` }, s.client_id) : s.client_id)],
      ["State", (s) => h("span", { class: s.connected ? "pill on" : "pill" },
        s.connected ? "online" : "offline")],
      ["MQTT", (s) => s.protocol],
      ["Expires", (s) => (s.connected ? (s.expiry_interval === null ? "never"
        : s.expiry_interval === 0 ? "at disconnect"
          : `${duration(s.expiry_interval)} after disconnect`) : (s.expires_in === null
        ? "never" : `in ${duration(s.expires_in)}`))],
      ["Subs", (s) => s.subscriptions], ["Inflight", (s) => s.inflight],
      ["Queued", (s) => s.queued], ["Will", (s) => (s.will ? "yes" : "")],
      ["", (s) => h("button", { class: "danger", type: "button", onclick: async () => {
        if (!await confirmAction(`Discard the session of "${s.client_id}"? Its client is ` +
            "disconnected and what it queued is lost.", "Discard")) return;
        try {
          await call(`/sessions/${encodeURIComponent(s.client_id)}`, { method: "DELETE" });
          page.flash.replaceChildren(notice(`Session "${s.client_id}" discarded.`, "ok"));
        } catch (err) {
          page.flash.replaceChildren(notice(`Discard failed: ${err.message}`, "error"));
        }
        page.refresh();
      } }, "Discard")]],
    items, "No session.");
  });
  return () => {};
}

export function renderSubscriptions(main) {
  const client = h("input", { type: "search", placeholder: "Client id (exactly)",
                              "aria-label": "Client id" });
  const filter = h("input", { type: "search", placeholder: "Topic filter (exactly)",
                              "aria-label": "Topic filter" });
  listPage(main, "Subscriptions", (refresh) => {
    client.addEventListener("change", refresh);
    filter.addEventListener("change", refresh);
    return [client, filter];
  }, async () => {
    const params = {};
    if (client.value) params.client_id = client.value;
    if (filter.value) params.topic_filter = filter.value;
    const [items, groups] = await Promise.all([all("/subscriptions", params),
                                               all("/shared-subscriptions")]);
    return h("div", {}, table([
      ["Client id", (s) => s.client_id], ["Topic filter", (s) => h("code", {}, s.topic_filter)],
      ["QoS", (s) => s.qos], ["No local", (s) => (s.no_local ? "yes" : "")],
      ["Retain handling", (s) => s.retain_handling],
      ["Shared group", (s) => s.shared_group ?? ""]], items, "No subscription."),
    groups.length ? [h("h2", { class: "spaced" }, "Shared subscription groups"),
      table([["Group", (g) => g.shared_group], ["Topic filter", (g) => h("code", {},
        g.topic_filter)], ["Members", (g) => g.members.join(", ")]], groups)] : "");
  });
  return () => {};
}

export function renderRetained(main, params) {
  const filter = h("input", { type: "text", id: "retained-filter", value: params.get("filter")
    || "#", "aria-label": "Topic filter", placeholder: "Topic filter, e.g. sensors/#" });
  const page = listPage(main, "Retained messages", (refresh) => {
    filter.addEventListener("keydown", (event) => { if (event.key === "Enter") refresh(); });
    return [h("label", { for: "retained-filter" }, "Topic filter"), filter];
  }, async () => {
    const items = await all("/retained", { filter: filter.value || "#" });
    return table([
      ["Topic", (m) => h("code", { class: "retained-topic" }, m.topic)], ["QoS", (m) => m.qos],
      ["Size", (m) => `${m.size} B`],
      ["Payload", (m) => [m.payload_encoding === "base64" ? h("span", { class: "muted" },
        `base64: ${m.payload}`) : m.payload, m.truncated ? " …" : ""], "payload"],
      ["Expires", (m) => (m.expires_in === null ? "never" : `in ${duration(m.expires_in)}`)],
      ["", (m) => h("button", { class: "danger delete", type: "button", onclick: async () => {
        if (!await confirmAction(`Delete the retained message of "${m.topic}"? New ` +
            "subscribers will no longer get it.", "Delete")) return;
        try {
          await call(`/retained/${topicPath(m.topic)}`, { method: "DELETE" });
          page.flash.replaceChildren(notice(`Retained message of "${m.topic}" deleted.`, "ok"));
        } catch (err) {
          page.flash.replaceChildren(notice(`Delete failed: ${err.message}`, "error"));
        }
        page.refresh();
      } }, "Delete")]],
    items, `No retained message matches ${filter.value || "#"}.`);
  });
  return () => {};
}
