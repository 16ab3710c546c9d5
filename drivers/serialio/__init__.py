"""Shared serial layer: opening ports, framing, request correlation, supervision, simulator endpoints."""

from drivers.serialio.correlation import CommandGate, FifoReplies, KeyedReplies, OwedReplies
from drivers.serialio.framing import PreambleFramer
from drivers.serialio.link import LinkProtocol, SerialLink, open_port

__all__ = [
    "CommandGate",
    "FifoReplies",
    "KeyedReplies",
    "LinkProtocol",
    "OwedReplies",
    "PreambleFramer",
    "SerialLink",
    "open_port",
]
