"""Shared serial layer: opening ports, framing, request correlation, one exchange, supervision, simulators."""

from drivers.serialio.correlation import CommandGate, FifoReplies, KeyedReplies, OwedReplies
from drivers.serialio.exchange import UnnamedReplies, ask, turn
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
    "UnnamedReplies",
    "ask",
    "open_port",
    "turn",
]
