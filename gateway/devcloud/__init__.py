"""The development cloud: live verification of uplinks, OTP and face answers, signed commands."""
