"""The one-machine multi-node cluster: its ports, and a process able to start Ray again after it."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from clar_ray import local_cluster
from clar_ray.local_cluster import free_ports

# A fresh process: Ray caches the auth mode and token per process, so the scenario must not
# leave them behind in the test session.
SCENARIO = """
import ray
from clar_ray.local_cluster import LocalCluster

ray.init(address="local", num_cpus=1, include_dashboard=False)  # Ray 2.60: token auth on
ray.shutdown()
cluster = LocalCluster()  # its nodes run without token auth
try:
    cluster.start_head()
finally:
    cluster.stop()
ray.init(address="local", num_cpus=1, include_dashboard=False)
assert ray.get(ray.put(7)) == 7
ray.shutdown()
print("local Ray after the cluster: ok")
"""


def test_a_local_ray_starts_after_the_cluster_stops(tmp_path: Path) -> None:
    """After the cluster, a local ``ray.init`` runs in the auth mode the process had before.

    With the cluster's "disabled" left in Ray's cached config, the new GCS (token mode, from
    the environment) refuses the process's own calls: "Authentication token is missing".
    """
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    env["HOME"] = str(tmp_path)  # Ray writes its generated token under ~/.ray
    done = subprocess.run([sys.executable, "-c", SCENARIO], env=env, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "local Ray after the cluster: ok" in done.stdout


class _Socket:
    """A socket whose bind gets the next port of ``offered`` (what the OS hands out)."""

    offered: list[int] = []

    def __init__(self, *args: object) -> None:
        self.port = 0

    def __enter__(self) -> _Socket:
        return self

    def __exit__(self, *args: object) -> None:
        pass

    def bind(self, address: tuple[str, int]) -> None:
        self.port = self.offered.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ("0.0.0.0", self.port)


def test_free_ports_never_repeat_a_port_the_cluster_gave_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The OS hands a port out again once its socket is closed: a CI run once gave the head's
    GCS and a node manager the same one, and ``ray start`` refused to start."""
    _Socket.offered = [40429, 40429, 50001, 40429, 50002, 50002, 50003]
    monkeypatch.setattr(local_cluster, "socket", types.SimpleNamespace(
        socket=_Socket, AF_INET=0, SOCK_STREAM=0))
    taken: set[int] = set()
    gcs = free_ports(1, taken)
    node = free_ports(3, taken)
    assert gcs == [40429]
    assert node == [50001, 50002, 50003]
    assert taken == {40429, 50001, 50002, 50003}


def test_free_ports_are_distinct_and_free() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    for port in ports:  # each can be bound now
        with local_cluster.socket.socket(local_cluster.socket.AF_INET,
                                         local_cluster.socket.SOCK_STREAM) as sock:
            sock.bind(("", port))
