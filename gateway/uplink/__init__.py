"""Uplink: signed envelopes (keys, envelope, commands, verifier), the durable outbox and the MQTT link."""
