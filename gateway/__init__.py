"""edge-gateway: the kiosk edge daemon."""

__version__ = "0.1.0"
