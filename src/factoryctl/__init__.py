"""factoryctl: the operator console and GPU exporter for AI factories."""

__version__ = "0.1.0"
