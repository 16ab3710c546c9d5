"""Peripheral drivers: frames, protocol and typed API per device; never imports gateway."""
