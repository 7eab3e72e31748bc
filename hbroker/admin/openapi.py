"""The OpenAPI 3 document of the admin REST API, served at `GET /api/v1/openapi.json`.

Kept here, as one Python dict, beside the routes it describes (a module, so the single binary
carries it as it carries the rest of the package). tests/integration/test_admin_openapi.py
checks it against the running API with schemathesis: every answer conforms to it, none is a
500.

It is public (no token): it says what the API looks like, which the project's documentation
says too, and nothing about this broker (not even its version); a dashboard or a client
generator reads it before it has a token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hbroker.admin.api import DEFAULT_LIMIT, MAX_LIMIT, PREFIX, Api, json_response
from hbroker.admin.server import PUBLIC

if TYPE_CHECKING:
    from aiohttp import web

API_VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required}


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
PROTOCOL = {"type": "string", "enum": ["3.1", "3.1.1", "5.0", "unknown"]}
QOS = {"type": "integer", "minimum": 0, "maximum": 2}


# A topic name: no wildcard, no NUL [MQTT-4.7.3-1, MQTT-4.7.3-2]; a topic filter: `+` and `#`
# only as whole levels, `#` last [MQTT-4.7.1-1, MQTT-4.7.1-2]; a shared one is not a filter
# of retained messages.
TOPIC_NAME = {"type": "string", "minLength": 1, "pattern": "^[^+#\\u0000]*$"}
TOPIC_FILTER = {"type": "string", "minLength": 1, "default": "#",
                "pattern": "^(?!\\$share/)(?:(?:\\+|[^/+#\\u0000]*)/)*"
                           "(?:\\+|#|[^/+#\\u0000]*)$"}
BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _publish_request(encoding: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The publish body with `encoding` (utf-8 may be left out, as the default)."""
    return {
        "type": "object", "additionalProperties": False,
        "required": ["topic"] if encoding == "utf-8" else ["topic", "encoding"],
        "properties": {
            "topic": {**TOPIC_NAME, "description": "A topic name (no wildcards)."},
            "payload": {**payload, "default": ""},
            "encoding": {"type": "string", "enum": [encoding]},
            "qos": {**QOS, "default": 0},
            "retain": {"type": "boolean", "default": False},
            "message_expiry_interval": {"type": "integer", "minimum": 0,
                                        "maximum": 0xFFFFFFFF},
            "content_type": STRING}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _page(item: str) -> dict[str, Any]:
    return _object({"items": {"type": "array", "items": _ref(item)},
                    "total": {"type": "integer", "minimum": 0,
                              "description": "Items matching the filters, all pages."},
                    "next": _nullable({"type": "string", "description": "`after` of the "
                                       "next page; null on the last one."})})


SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": STRING, "field": STRING, "reason_code": INTEGER}, ["error"]),
    "Subscription": _object({
        "topic_filter": STRING, "qos": QOS, "no_local": BOOLEAN,
        "retain_as_published": BOOLEAN,
        "retain_handling": {"type": "integer", "minimum": 0, "maximum": 2},
        "subscription_identifier": _nullable(INTEGER),
        "shared_group": _nullable(STRING), "shared_filter": _nullable(STRING)}),
    "SessionSubscription": {"allOf": [_object({"client_id": STRING}), _ref("Subscription")]},
    "SharedGroup": _object({"share": STRING, "shared_group": STRING, "topic_filter": STRING,
                            "members": {"type": "array", "items": STRING}}),
    "Session": _object({
        "client_id": STRING, "connected": BOOLEAN, "protocol": PROTOCOL,
        "expiry_interval": _nullable({**NUMBER, "description": "Seconds the session "
                                      "outlives its connection; null: never expires."}),
        "expires_in": _nullable({**NUMBER, "description": "Seconds left, while offline."}),
        "subscriptions": INTEGER, "inflight": INTEGER, "queued": INTEGER,
        "queued_bytes": INTEGER, "will": BOOLEAN}),
    "SessionDetail": {"allOf": [_ref("Session"), _object({
        "inflight_maximum": INTEGER, "queued_maximum": INTEGER,
        "queued_bytes_maximum": INTEGER, "dropped": INTEGER, "awaiting_pubrel": INTEGER,
        "subscription_list": {"type": "array", "items": _ref("Subscription")}})]},
    "Client": _object({
        "client_id": STRING, "username": _nullable(STRING), "listener": STRING,
        "protocol": PROTOCOL, "peer": STRING,
        "connected_at": {"type": "string", "description": "UTC, ISO 8601."},
        "keepalive": INTEGER, "expiry_interval": _nullable(NUMBER),
        "subscriptions": INTEGER, "inflight": INTEGER, "queued": INTEGER,
        "queued_bytes": INTEGER},
        ["client_id", "listener", "protocol", "peer", "connected_at", "keepalive"]),
    "ClientDetail": {"allOf": [_ref("Client"), _object({
        "certificate_identity": _nullable(STRING),
        "session": _nullable(_ref("SessionDetail"))})]},
    "RetainedMessage": _object({
        "topic": STRING, "qos": QOS, "size": INTEGER, "expires_in": _nullable(NUMBER),
        "content_type": _nullable(STRING), "payload": STRING,
        "payload_encoding": {"type": "string", "enum": ["utf-8", "base64"]},
        "truncated": BOOLEAN},
        ["topic", "qos", "size", "expires_in", "content_type", "payload",
         "payload_encoding"]),
    "PublishRequest": {"oneOf": [_publish_request("utf-8", {"type": "string"}),
                                 _publish_request("base64", {"type": "string",
                                                             "pattern": BASE64})]},
    "PublishResult": _object({"reason_code": INTEGER, "reason": STRING}),
    "Broker": _object({
        "version": STRING, "node": STRING, "clustered": BOOLEAN, "started_at": STRING,
        "uptime_seconds": NUMBER, "ready": BOOLEAN,
        "readiness": {"type": "object", "additionalProperties": STRING},
        "clients_connected": INTEGER, "clients_connected_max": INTEGER,
        "sessions_online": INTEGER, "sessions_offline": INTEGER, "subscriptions": INTEGER,
        "shared_subscription_groups": INTEGER, "retained_messages": INTEGER,
        "inflight_messages": INTEGER, "queued_messages": INTEGER,
        "counters": {"type": "object", "additionalProperties": INTEGER,
                     "description": "The broker's counters (as /metrics exports them)."},
        "dropped": {"type": "object", "additionalProperties": INTEGER,
                    "description": "Dropped messages by reason."}}),
    "Stats": _object({
        "time": {**NUMBER, "description": "Unix time of the sample."},
        "uptime_seconds": NUMBER, "ready": BOOLEAN,
        "messages_received": {**INTEGER, "description": "PUBLISH packets received, total."},
        "messages_sent": {**INTEGER, "description": "PUBLISH packets sent, total."},
        "messages_dropped": {**INTEGER, "description": "Messages dropped, every reason."},
        "bytes_received": INTEGER, "bytes_sent": INTEGER, "clients_connected": INTEGER,
        "sessions": INTEGER, "subscriptions": INTEGER, "retained_messages": INTEGER,
        "cpu_seconds": {**NUMBER, "description": "CPU time of the process, total."},
        "memory_rss_bytes": _nullable(INTEGER),
        "storage": _object({"backend": STRING, "durable": BOOLEAN, "healthy": BOOLEAN}),
        "cluster_instances": _nullable({"type": "array", "items": _object({
            "name": STRING, "alive": BOOLEAN, "clients": _nullable(INTEGER)}),
            "description": "null: not clustered."})}),
    "Storage": _object({
        "backend": {"type": "string", "enum": ["sqlite", "postgres", "memory"]},
        "durable": BOOLEAN, "mode": _nullable(STRING), "location": STRING,
        "degraded": BOOLEAN, "full": BOOLEAN, "commits": INTEGER, "commit_failures": INTEGER,
        "pending_changes": INTEGER, "commit_seconds_sum": NUMBER,
        "commit_seconds_count": INTEGER}, ["backend", "durable", "mode"]),
    "Listener": _object({
        "name": STRING, "type": {"type": "string",
                                 "enum": ["tcp", "tls", "ws", "wss", "unix"]},
        "address": STRING, "tls": BOOLEAN, "serving": BOOLEAN,
        "protocol_versions": {"type": "array", "items": INTEGER},
        "max_connections": _nullable(INTEGER), "clients": INTEGER},
        ["name", "type", "address", "tls", "serving", "protocol_versions",
         "max_connections", "clients"]),
    "Config": {"type": "object", "description": "The effective configuration, one key per "
               "table of the configuration file (docs/configuration.md), secrets redacted.",
               "required": ["listeners"],
               "properties": {"source": _nullable(STRING),
                              "listeners": {"type": "array", "items": {"type": "object"}}},
               "additionalProperties": _nullable({"type": "object"})},
}

PARAMETERS: dict[str, Any] = {
    "limit": {"name": "limit", "in": "query", "description": "Items per page.",
              "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                         "default": DEFAULT_LIMIT}},
    "after": {"name": "after", "in": "query", "schema": STRING,
              "description": "The `next` of the previous page."},
    "client_id": {"name": "client_id", "in": "path", "required": True, "schema": STRING},
    "topic": {"name": "topic", "in": "path", "required": True, "schema": STRING,
              "description": "The topic, levels separated by `/` (percent-encode the rest)."},
}

_PAGING = [{"$ref": "#/components/parameters/limit"}, {"$ref": "#/components/parameters/after"}]
_CLIENT_ID = [{"$ref": "#/components/parameters/client_id"}]
_TOPIC = [{"$ref": "#/components/parameters/topic"}]


def _query(name: str, description: str, schema: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description,
            "schema": schema or STRING}


_READ_ERRORS = {"401": _error("No valid token."), "400": _error("Bad input (`field` names "
                                                                "it).")}
_ADMIN_ERRORS = {**_READ_ERRORS, "403": _error("The token's role is `read`; this needs "
                                               "`admin`.")}


def _get(summary: str, schema: dict[str, Any], parameters: list[Any] | None = None,
         not_found: bool = False) -> dict[str, Any]:
    responses = {"200": _json(schema, "OK"), **_READ_ERRORS}
    if not_found:
        responses["404"] = _error("Unknown id.")
    return {"summary": summary, "parameters": parameters or [], "responses": responses}


def _mutating(summary: str, schema: dict[str, Any], parameters: list[Any] | None = None,
              not_found: bool = False, refused: bool = False) -> dict[str, Any]:
    responses = {"200": _json(schema, "Done"), **_ADMIN_ERRORS}
    if not_found:
        responses["404"] = _error("Unknown id.")
    if refused:
        responses["409"] = _error("The broker refused it (`reason_code`).")
    return {"summary": summary, "parameters": parameters or [], "responses": responses}


def _done(key: str) -> dict[str, Any]:
    return _object({key: STRING})


PATHS: dict[str, Any] = {
    "/broker": {"get": _get("Broker status: version, uptime, readiness, counts, counters.",
                            _ref("Broker"))},
    "/storage": {"get": _get("Storage status.", _ref("Storage"))},
    "/stats": {"get": _get("Totals and counts for a dashboard to poll (rates from the "
                           "differences of two samples).", _ref("Stats"))},
    "/listeners": {"get": _get("The MQTT listeners.", _object({
        "items": {"type": "array", "items": _ref("Listener")}}))},
    "/config": {"get": _get("The effective configuration, secrets redacted.",
                            _ref("Config"))},
    "/clients": {"get": _get("Connected clients, by client id.", _page("Client"), [
        *_PAGING, _query("prefix", "Client ids starting with this."),
        _query("listener", "Clients of this listener (its name)."),
        _query("protocol", "MQTT protocol version.",
               {"type": "string", "enum": ["3.1", "3.1.1", "5.0"]}),
        _query("username", "Clients with this username.")])},
    "/clients/{client_id}": {
        "get": _get("One connected client, with its session.", _ref("ClientDetail"),
                    _CLIENT_ID, not_found=True),
        "delete": _mutating("Kick the client: DISCONNECT 0x98 (Administrative action) on "
                            "MQTT 5.0, then the connection is closed; its will is published.",
                            _done("kicked"), _CLIENT_ID, not_found=True)},
    "/sessions": {"get": _get("Sessions, online and offline, by client id.", _page("Session"),
                              [*_PAGING, _query("prefix", "Client ids starting with this."),
                               _query("connected", "Only online (true) or offline (false).",
                                      BOOLEAN)])},
    "/sessions/{client_id}": {
        "get": _get("One session.", _ref("SessionDetail"), _CLIENT_ID, not_found=True),
        "delete": _mutating("Discard the session (its client is disconnected with 0x98 "
                            "first; no will).", _done("discarded"), _CLIENT_ID,
                            not_found=True)},
    "/subscriptions": {"get": _get("Subscriptions of every session, by client id and topic "
                                   "filter.", _page("SessionSubscription"), [
        *_PAGING, _query("client_id", "Of this session only."),
        _query("topic_filter", "This topic filter exactly."),
        _query("shared_group", "Of this shared subscription group.")])},
    "/shared-subscriptions": {"get": _get("Shared subscription groups with their members.",
                                          _page("SharedGroup"), [
        *_PAGING, _query("shared_group", "This group only.")])},
    "/retained": {"get": _get("Retained messages whose topics match a filter, by topic "
                              "(payloads cut to 64 bytes: `truncated`).",
                              _page("RetainedMessage"), [
        *_PAGING, _query("filter", "An MQTT topic filter (default `#`, which, as in MQTT, "
                         "does not match `$SYS/...`).", TOPIC_FILTER)])},
    "/retained/{topic}": {
        "get": _get("One retained message, whole payload.", _ref("RetainedMessage"),
                    _TOPIC, not_found=True),
        "delete": _mutating("Clear the topic's retained message (an empty retained PUBLISH).",
                            _done("cleared"), _TOPIC, not_found=True, refused=True)},
    "/publish": {"post": {**_mutating("Publish a message.", _ref("PublishResult"),
                                      refused=True),
                          "requestBody": {"required": True, "content": {
                              "application/json": {"schema": _ref("PublishRequest")}}}}},
}
PATHS["/publish"]["post"]["responses"].update({
    "413": _error("The body is over `admin.max_body_size`."),
    "503": _error("The API's client cannot connect.")})


def _link(source: tuple[str, str], target: tuple[str, str], name: str, parameter: str,
          expression: str) -> None:
    """An OpenAPI link: an id an answer gives, to the operation it names (for clients that
    follow links, and for schemathesis's stateful tests)."""
    path, method = target
    op_id = f"{method}{path.replace('/', '_').replace('{', '').replace('}', '')}"
    PATHS[path][method]["operationId"] = op_id
    response = PATHS[source[0]][source[1]]["responses"]["200"]
    response.setdefault("links", {})[name] = {
        "operationId": op_id, "parameters": {parameter: expression}}


for _list, _item, _param, _field in (("/clients", "/clients/{client_id}", "client_id",
                                      "client_id"),
                                     ("/sessions", "/sessions/{client_id}", "client_id",
                                      "client_id"),
                                     ("/retained", "/retained/{topic}", "topic", "topic")):
    for _method in ("get", "delete"):
        _link((_list, "get"), (_item, _method), f"{_method}_{_item.split('/')[1]}_item",
              _param, f"$response.body#/items/0/{_field}")


def _secured(paths: dict[str, Any]) -> dict[str, Any]:
    return {PREFIX + path: ops for path, ops in paths.items()}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "hbroker admin API", "version": API_VERSION,
             "description": "Inspect and act on an hbroker MQTT broker (docs/admin-api.md). "
             "Every call takes `Authorization: Bearer TOKEN`; calls that change something "
             "need a token of role `admin`, and each is written to the audit log."},
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "paths": {**_secured(PATHS), PREFIX + "/openapi.json": {"get": {
        "summary": "This document.", "security": [],
        "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")}}}},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": SCHEMAS,
        "parameters": PARAMETERS,
    },
}


def setup(api: Api) -> None:
    async def document(request: web.Request) -> web.Response:
        return json_response(DOCUMENT)

    api.route("GET", "/openapi.json", document, PUBLIC)
