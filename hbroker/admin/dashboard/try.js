// Try it: an MQTT client in the browser (MQTT.js, shipped in vendor/) over one of the broker's
// WebSocket listeners, found in /api/v1/listeners. The page's origin is the admin listener's,
// so the WebSocket listener's `allowed_origins` must name it (the page says which).
// It connects as an ordinary client: the broker's authentication and ACLs apply.

import { call } from "./api.js";
import { h } from "./dom.js";

let client = null;  // kept across pages: leaving "Try it" does not drop the connection
const received = [];

function loadMqtt() {
  if (window.mqtt) return Promise.resolve(window.mqtt);
  return new Promise((resolve, reject) => {
    const script = h("script", { src: "/ui/vendor/mqtt.min.js" });
    script.addEventListener("load", () => resolve(window.mqtt));
    script.addEventListener("error", () => reject(new Error("MQTT.js did not load")));
    document.head.append(script);
  });
}

export function websocketUrl(listener, pageHost) {
  const scheme = listener.type === "wss" ? "wss" : "ws";
  const match = /^(.*):(\d+)$/.exec(listener.address);
  let host = match ? match[1] : listener.address;
  const port = match ? match[2] : "";
  if (["0.0.0.0", "::", "[::]", ""].includes(host)) host = pageHost;
  if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  return `${scheme}://${host}${port ? `:${port}` : ""}${listener.path || "/mqtt"}`;
}

export function renderTry(main) {
  const url = h("input", { id: "try-url", type: "text", "aria-label": "WebSocket URL" });
  const clientId = h("input", { id: "try-client-id", type: "text",
    value: `dashboard-${Math.random().toString(16).slice(2, 8)}` });
  const username = h("input", { id: "try-username", type: "text", autocomplete: "off" });
  const password = h("input", { id: "try-password", type: "password", autocomplete: "off" });
  const state = h("span", { id: "try-state", class: "pill" }, "disconnected");
  const connectButton = h("button", { id: "try-connect", type: "button" }, "Connect");
  const hint = h("p", { class: "muted", id: "try-hint" });
  const subTopic = h("input", { id: "try-sub-topic", type: "text", value: "#",
                                "aria-label": "Topic filter to subscribe to" });
  const subQos = qosSelect("try-sub-qos");
  const pubTopic = h("input", { id: "try-pub-topic", type: "text", value: "dashboard/hello",
                                "aria-label": "Topic to publish to" });
  const pubPayload = h("textarea", { id: "try-pub-payload", rows: 3,
                                     "aria-label": "Payload" }, "hello from the dashboard");
  const pubQos = qosSelect("try-pub-qos");
  const pubRetain = h("input", { id: "try-pub-retain", type: "checkbox" });
  const log = h("div", { class: "log", id: "try-log", "aria-live": "polite" });
  const subButton = h("button", { id: "try-subscribe", type: "button" }, "Subscribe");
  const pubButton = h("button", { id: "try-publish", type: "button" }, "Publish");

  const line = (text, topic) => {
    received.push({ text, topic });
    if (received.length > 500) received.shift();
    draw();
  };
  const draw = () => {
    log.replaceChildren(...received.map((m) => h("div", {}, m.topic !== undefined
      ? [h("span", { class: "topic" }, m.topic), " ", m.text] : h("em", {}, m.text))));
    log.scrollTop = log.scrollHeight;
  };
  const showState = () => {
    const connected = client !== null && client.connected;
    state.textContent = connected ? "connected" : client ? "connecting" : "disconnected";
    state.className = connected ? "pill on" : "pill";
    connectButton.textContent = client ? "Disconnect" : "Connect";
    subButton.disabled = pubButton.disabled = !connected;
  };

  connectButton.addEventListener("click", async () => {
    if (client) {
      client.end(true);
      client = null;
      line("disconnected");
      showState();
      return;
    }
    let mqtt;
    try { mqtt = await loadMqtt(); } catch (err) { line(err.message); return; }
    const options = { clientId: clientId.value, protocolVersion: 5, reconnectPeriod: 0,
                      clean: true, connectTimeout: 10000 };
    if (username.value) options.username = username.value;
    if (password.value) options.password = password.value;
    line(`connecting to ${url.value} as ${clientId.value}`);
    client = mqtt.connect(url.value, options);
    const mine = client;
    client.on("connect", () => { line("connected"); showState(); });
    client.on("message", (topic, payload) => line(payload.toString(), topic));
    client.on("error", (err) => line(`error: ${err.message}`));
    client.on("close", () => {
      if (client === mine) { client = null; line("connection closed"); showState(); }
    });
    showState();
  });
  subButton.addEventListener("click", () => {
    const topic = subTopic.value;
    client.subscribe(topic, { qos: Number(subQos.value) }, (err, granted) => {
      if (err) line(`subscribe failed: ${err.message}`);
      else line(`subscribed to ${topic} (${granted.map((g) => `QoS ${g.qos}`).join(", ")})`);
    });
  });
  pubButton.addEventListener("click", () => {
    const topic = pubTopic.value;
    client.publish(topic, pubPayload.value, { qos: Number(pubQos.value),
                                              retain: pubRetain.checked }, (err) => {
      line(err ? `publish failed: ${err.message}` : `published to ${topic}`);
    });
  });

  main.replaceChildren(h("h1", {}, "Try it"),
    h("p", { class: "muted" }, "An MQTT 5.0 client in this browser (MQTT.js) over one of the " +
      "broker's WebSocket listeners. It is an ordinary client: authentication and ACLs apply."),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h2", {}, "Connection ", state),
        h("div", { class: "form" },
          h("label", { for: "try-url" }, "URL"), url,
          h("label", { for: "try-client-id" }, "Client id"), clientId,
          h("label", { for: "try-username" }, "Username"), username,
          h("label", { for: "try-password" }, "Password"), password,
          h("div", { class: "wide" }, connectButton), h("div", { class: "wide" }, hint))),
      h("div", { class: "card" }, h("h2", {}, "Subscribe"),
        h("div", { class: "form" },
          h("label", { for: "try-sub-topic" }, "Filter"), subTopic,
          h("label", { for: "try-sub-qos" }, "QoS"), subQos,
          h("div", { class: "wide" }, subButton)),
        h("h2", { class: "spaced" }, "Publish"),
        h("div", { class: "form" },
          h("label", { for: "try-pub-topic" }, "Topic"), pubTopic,
          h("label", { for: "try-pub-payload" }, "Payload"), pubPayload,
          h("label", { for: "try-pub-qos" }, "QoS"), pubQos,
          h("label", { for: "try-pub-retain" }, "Retain"), h("div", {}, pubRetain),
          h("div", { class: "wide" }, pubButton)))),
    h("div", { class: "card spaced" }, h("h2", {}, "Messages"), log));
  draw();
  showState();

  call("/listeners").then(({ items }) => {
    const sockets = items.filter((l) => l.type === "ws" || l.type === "wss");
    if (!sockets.length) {
      hint.textContent = "This broker has no WebSocket listener: add one of type \"ws\" or " +
        "\"wss\" to its configuration.";
      return;
    }
    const preferred = sockets.find((l) => l.type === (location.protocol === "https:"
      ? "wss" : "ws")) || sockets[0];
    if (!url.value) url.value = websocketUrl(preferred, location.hostname);
    hint.textContent = `Listener "${preferred.name}" allows origins: ` +
      `${preferred.allowed_origins || "same origin only"}; this page's origin is ` +
      `${location.origin}.`;
  }).catch((err) => { hint.textContent = `Listeners unknown: ${err.message}`; });
  return () => {};
}

function qosSelect(id) {
  return h("select", { id }, [0, 1, 2].map((q) => h("option", { value: q }, `QoS ${q}`)));
}
