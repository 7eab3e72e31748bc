"""The admin listener: one aiohttp application on its own address (`[admin]`), serving
Prometheus metrics (`metrics.py`) and health checks (`health.py`); each module adds its own
routes to the application (`server.py`). It reads the broker at request time and adds nothing
to the path of a message."""
