// Overview: is the broker healthy, and how busy. /api/v1/stats is polled every two seconds
// while logged in (whatever page is open), and the last fifteen minutes of samples are kept
// here: rates come from the differences of consecutive samples, so the broker keeps no
// history. Listeners and storage details come from their own endpoints.

import { call } from "./api.js";
import { drawChart, formatRate } from "./chart.js";
import { bytes, duration, h, table } from "./dom.js";

const POLL_MS = 2000;
const SPAN = 15 * 60;  // seconds of history on the chart
const samples = [];    // /stats answers, oldest first, with `rates` once there is a previous one
let timer = null;
const listeners = new Set();

export function startSampling() {
  if (timer !== null) return;
  const poll = async () => {
    try {
      const stats = await call("/stats");
      const previous = samples[samples.length - 1];
      if (previous && stats.time > previous.time) {
        const dt = stats.time - previous.time;
        const rate = (key) => Math.max(0, stats[key] - previous[key]) / dt;
        stats.rates = { in: rate("messages_received"), out: rate("messages_sent"),
                        dropped: rate("messages_dropped"),
                        cpu: Math.max(0, stats.cpu_seconds - previous.cpu_seconds) / dt };
      }
      samples.push(stats);
      while (samples.length && samples[0].time < stats.time - SPAN - 5) samples.shift();
      for (const callback of listeners) callback();
    } catch (err) {
      for (const callback of listeners) callback(err);
    }
  };
  poll();
  timer = setInterval(poll, POLL_MS);
}

export function stopSampling() {
  clearInterval(timer);
  timer = null;
  samples.length = 0;
}

function stat(id, label) {
  return h("div", { class: "card stat" }, h("div", { class: "label" }, label),
    h("div", { class: "value", id }, "…"), h("div", { class: "sub", id: `${id}-sub` }, ""));
}

function set(id, value, sub) {
  const node = document.getElementById(id);
  if (node) node.textContent = value;
  const subNode = document.getElementById(`${id}-sub`);
  if (subNode && sub !== undefined) subNode.textContent = sub;
}

export function renderOverview(main) {
  const canvas = h("canvas", { class: "chart", id: "rate-chart",
                               "aria-label": "Messages per second, last 15 minutes" });
  const listenerBox = h("div", { id: "listeners" }, h("p", { class: "muted" }, "Loading…"));
  const storageBox = h("div", { id: "storage" }, h("p", { class: "muted" }, "Loading…"));
  const clusterCard = h("div", { class: "card", id: "cluster", hidden: true },
    h("h2", {}, "Cluster instances"), h("div", { id: "cluster-list" }));
  const status = h("p", { id: "overview-error", class: "error", hidden: true });
  const legendItem = (key, label) => h("span", {},
    h("span", { class: `key key-${key}` }), `${label} `,
    h("strong", { id: `rate-${key}` }, "—"), "/s");

  main.replaceChildren(
    h("h1", {}, "Overview"), status,
    h("div", { class: "grid" },
      stat("stat-health", "Health"), stat("stat-connections", "Connections"),
      stat("stat-sessions", "Sessions"), stat("stat-subscriptions", "Subscriptions"),
      stat("stat-retained", "Retained"), stat("stat-received", "Messages in"),
      stat("stat-sent", "Messages out"), stat("stat-dropped", "Dropped"),
      stat("stat-cpu", "CPU"), stat("stat-memory", "Memory")),
    h("div", { class: "card chart-card" },
      h("div", { class: "chart-head" }, h("h2", {}, "Messages per second, last 15 minutes"),
        h("div", { class: "legend" }, legendItem("in", "in"), legendItem("out", "out"),
          legendItem("dropped", "dropped"))),
      canvas),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h2", {}, "Listeners"), listenerBox),
      h("div", { class: "card" }, h("h2", {}, "Storage"), storageBox),
      clusterCard));

  const styles = getComputedStyle(document.documentElement);
  const colors = ["--in", "--out", "--drop"].map((name) => styles.getPropertyValue(name).trim());

  const update = (err) => {
    status.hidden = !err;
    if (err) { status.textContent = `Cannot read the broker: ${err.message}`; return; }
    const last = samples[samples.length - 1];
    if (!last) return;
    set("stat-health", last.ready ? "ready" : "not ready", `up ${duration(last.uptime_seconds)}`);
    document.getElementById("stat-health").className = `value ${last.ready ? "ok" : "error"}`;
    set("stat-connections", last.clients_connected.toLocaleString());
    set("stat-sessions", last.sessions.toLocaleString());
    set("stat-subscriptions", last.subscriptions.toLocaleString());
    set("stat-retained", last.retained_messages.toLocaleString());
    set("stat-received", last.messages_received.toLocaleString(), `${bytes(last.bytes_received)} in`);
    set("stat-sent", last.messages_sent.toLocaleString(), `${bytes(last.bytes_sent)} out`);
    set("stat-dropped", last.messages_dropped.toLocaleString());
    set("stat-memory", bytes(last.memory_rss_bytes), "resident");
    if (last.rates) {
      set("stat-cpu", `${(last.rates.cpu * 100).toFixed(1)} %`, `${last.cpu_seconds.toFixed(1)} s total`);
      set("rate-in", formatRate(last.rates.in));
      set("rate-out", formatRate(last.rates.out));
      set("rate-dropped", formatRate(last.rates.dropped));
    }
    const withRates = samples.filter((s) => s.rates);
    canvas.dataset.samples = String(withRates.length);
    drawChart(canvas, ["in", "out", "dropped"].map((key, i) => ({
      color: colors[i], points: withRates.map((s) => [s.time, s.rates[key]]),
    })), SPAN, last.time);
    const storage = last.storage;
    storageBox.replaceChildren(h("p", {},
      h("span", { class: storage.healthy ? "pill on" : "pill off", id: "storage-health" },
        storage.healthy ? "healthy" : "degraded"), ` ${storage.backend}`,
      storage.durable ? "" : " (not durable: nothing survives a restart)"));
    if (last.cluster_instances !== null) {
      clusterCard.hidden = false;
      document.getElementById("cluster-list").replaceChildren(table(
        [["Instance", (i) => i.name], ["State", (i) => h("span",
          { class: i.alive ? "pill on" : "pill off" }, i.alive ? "alive" : "gone")],
         ["Clients", (i) => i.clients ?? "—"]],
        last.cluster_instances, "No instance seen yet."));
    }
  };

  const refreshListeners = async () => {
    try {
      const { items } = await call("/listeners");
      listenerBox.replaceChildren(table([
        ["Name", (l) => [`${l.name} `, h("span", { class: l.serving ? "pill on" : "pill off" },
          l.serving ? "serving" : "down")]],
        ["Type", (l) => l.type], ["Address", (l) => l.address],
        ["Clients", (l) => l.clients]], items, "No listener."));
    } catch (err) {
      listenerBox.replaceChildren(h("p", { class: "error" }, err.message));
    }
  };
  refreshListeners();
  const listenerTimer = setInterval(refreshListeners, 4000);
  listeners.add(update);
  update();
  const resize = () => update();
  window.addEventListener("resize", resize);
  return () => {
    listeners.delete(update);
    clearInterval(listenerTimer);
    window.removeEventListener("resize", resize);
  };
}
