"""hbroker: an MQTT 3.1.1/5.0 broker with a Cython hot path."""

__version__ = "0.1.0"
