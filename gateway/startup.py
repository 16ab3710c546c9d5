"""Start-up checks of the config's files and the node key: one clear error, naming the key and the fix."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import GatewayConfig
from gateway.errors import StartupError

if TYPE_CHECKING:
    from gateway.uplink.keys import NodeKey

# `edge-gateway run` exit statuses. The unit's RestartPreventExitStatus= lists EXIT_CONFIG: a
# restart cannot fix a config or a file it names, so systemd leaves the unit failed instead of
# restarting it every RestartSec= (exit 1, anything unexpected, is still restarted).
EXIT_FAILURE = 1
EXIT_CONFIG = 2


@dataclass(frozen=True)
class FileProblem:
    """What is wrong with one file a config key names, and what the technician does about it."""

    key: str
    path: str
    problem: str
    fix: str


class UnusableFileError(StartupError):
    """A file the config names is missing or unusable: the daemon cannot start until it is fixed."""

    def __init__(self, problem: FileProblem) -> None:
        super().__init__(f"{problem.key}: {problem.path}: {problem.problem}; {problem.fix}")
        self.problem = problem


def _readable(key: str, path: Path, what: str, fix_missing: str) -> FileProblem | None:
    """A problem if `path` is missing or this process cannot read it."""
    try:
        with path.open("rb"):
            return None
    except FileNotFoundError:
        return FileProblem(key, str(path), f"{what} is missing", fix_missing)
    except PermissionError:
        return FileProblem(
            key,
            str(path),
            f"{what} is not readable by uid {os.getuid()}",
            f"`chgrp edge-gateway {path}; chmod 0640 {path}`",
        )
    except OSError as err:
        return FileProblem(key, str(path), f"cannot open {what}: {err.strerror}", f"check {path}")


def _unset_hint(key: str) -> str:
    return f"or remove {key} from the config (docs/install.md, 'Connect to the cloud')"


def _tls_problems(config: GatewayConfig) -> Iterator[FileProblem]:
    up = config.uplink
    if not up.broker:
        return
    for key, name, what in (
        ("uplink.ca_file", up.ca_file, "the broker's CA certificate"),
        ("uplink.client_cert", up.client_cert, "the node's TLS certificate"),
        ("uplink.client_key", up.client_key, "the node's TLS private key"),
    ):
        if not name:
            continue
        fix = (
            f"copy {what} (PEM) to {name}, `chgrp edge-gateway {name}; chmod 0640 {name}`, {_unset_hint(key)}"
        )
        problem = _readable(key, Path(name), what, fix)
        if problem is not None:
            yield problem
            return
    try:
        ssl.create_default_context(cafile=up.ca_file or None)
    except (ssl.SSLError, OSError, ValueError) as err:
        yield FileProblem(
            "uplink.ca_file",
            up.ca_file,
            f"not a PEM CA certificate ({err})",
            "replace it with the broker CA's certificate in PEM form",
        )
        return
    if up.client_cert:
        try:
            ssl.create_default_context().load_cert_chain(up.client_cert, up.client_key or None)
        except (ssl.SSLError, OSError, ValueError) as err:
            yield FileProblem(
                "uplink.client_cert",
                up.client_cert,
                f"certificate and uplink.client_key {up.client_key} do not load as a pair ({err})",
                "install the node's certificate and the private key it was issued for, both PEM",
            )


def _cloud_key_problems(config: GatewayConfig) -> Iterator[FileProblem]:
    from gateway.uplink.keys import KeyMissingError, KeyRing, KeyStoreError

    for name in config.uplink.cloud_keys:
        fix = (
            f"copy the cloud's public key (JWK) to {name}, `chgrp edge-gateway {name}; chmod 0640 {name}`, "
            f"{_unset_hint('uplink.cloud_keys')}"
        )
        problem = _readable("uplink.cloud_keys", Path(name), "the cloud's public key", fix)
        if problem is not None:
            yield problem
            return
        try:
            KeyRing.from_files([name])
        except KeyMissingError:
            yield FileProblem("uplink.cloud_keys", name, "the cloud's public key is missing", fix)
            return
        except KeyStoreError as err:
            yield FileProblem(
                "uplink.cloud_keys",
                name,
                f"not a usable Ed25519 public JWK ({err})",
                "replace it with the JWK (or JWK Set) the cloud publishes",
            )
            return


def file_problems(config: GatewayConfig) -> list[FileProblem]:
    """Every unusable file among those the daemon opens at start (TLS files, cloud keys)."""
    return [*_tls_problems(config), *_cloud_key_problems(config)]


def check_files(config: GatewayConfig) -> None:
    """Raise UnusableFileError for the first unusable file the config names."""
    problems = file_problems(config)
    if problems:
        raise UnusableFileError(problems[0])


EXAMPLE_NODE_ID = "edge-001"


def left_to_do(config: GatewayConfig) -> list[str]:
    """What a technician still has to set up after install (install.sh prints it; diag shows it)."""
    where = config.source
    todo = [f"fix {p.key}: {p.path}: {p.problem}; {p.fix}" for p in file_problems(config)]
    if config.node.id == EXAMPLE_NODE_ID:
        todo.append(f"node.id is still the example's {EXAMPLE_NODE_ID!r}: set this box's id in {where}")
    if not config.uplink.broker:
        todo.append(
            "connect to the cloud: copy the broker's CA certificate and this node's TLS certificate and "
            f"key to /etc/edge-gateway, then set uplink.broker, ca_file, client_cert and client_key in "
            f"{where} (until then messages wait in the outbox)"
        )
    if not config.uplink.cloud_keys:
        todo.append(
            "trust the cloud's commands: copy its public key (JWK) to /etc/edge-gateway/cloud.jwk and "
            f'set uplink.cloud_keys = ["/etc/edge-gateway/cloud.jwk"] in {where} (until then every '
            "cloud command is refused)"
        )
    return todo


def load_node_key(config: GatewayConfig) -> NodeKey:
    """The signing key; a missing key is made only where config allows, a loose one is refused."""
    from gateway.uplink.keys import (
        KeyMissingError,
        KeyPermissionError,
        KeyStoreError,
        init_key,
        load_key,
    )

    path, node = config.key_path, config.node.id
    try:
        return load_key(path, node)
    except KeyMissingError as err:
        if not config.node.auto_init_key:
            raise UnusableFileError(
                FileProblem(
                    "uplink.key_file",
                    str(path),
                    "the node signing key is missing",
                    f"create it as the daemon's user: `edge-gateway keys init -c {config.source}` "
                    "(installed: `runuser -u edge-gateway -- /opt/edge-gateway/venv/bin/edge-gateway "
                    f"keys init -c {config.source}`)",
                )
            ) from err
        return init_key(path, node)
    except KeyPermissionError as err:
        raise UnusableFileError(
            FileProblem("uplink.key_file", str(path), str(err), f"`chmod 600 {path}`")
        ) from err
    except KeyStoreError as err:
        raise UnusableFileError(
            FileProblem(
                "uplink.key_file",
                str(path),
                str(err),
                "restore the key from backup (owner edge-gateway, mode 0600), or move it away, "
                "`edge-gateway keys init` and register the new public key with the cloud",
            )
        ) from err
