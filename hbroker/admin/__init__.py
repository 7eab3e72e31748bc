"""The admin listener: one aiohttp application on its own address (`[admin]`), serving
Prometheus metrics (`metrics.py`), health checks (`health.py`) and the REST API under /api/v1
(`api.py` and one `api_*.py` per resource, its OpenAPI document in `openapi.py`); each module
adds its own routes to the application (`server.py`). `ctl.py` is `hbroker ctl`, the API's
command-line client. It reads the broker at request time and adds nothing to the path of a
message."""
