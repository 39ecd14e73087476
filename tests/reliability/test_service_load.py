"""The real ``skinlesion serve`` on 127.0.0.1 under a bounded load of real photos, beside
hostile clients (slowloris, stalled bodies, oversized bodies, garbage): zero errors, every
hostile client answered 408/413/400 in time, memory bounded, no connection left open.

Smaller than ``bench/service_load.py`` (which runs 8 × 200 on the default backbone and puts
its figures in docs/BENCHMARKS.md); the same code drives both.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from inference_runs import responsive_run_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ lives beside src/
from bench.service_load import measure_service, photos

pytestmark = pytest.mark.integration

CLIENTS, PER_CLIENT = 8, 16
CLIENT_TIMEOUT_S = 2.0
RSS_GROWTH_LIMIT_MB = 40.0
"""Allowed RSS growth of the server over the second round (64 requests) once warm: a leak
of 1 MB per request would exceed it; allocator noise is a few MB."""


@pytest.fixture(scope="module")
def measured(isic_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run = responsive_run_dir(tmp_path_factory)
    return measure_service(run, photos(16), clients=CLIENTS, per_client=PER_CLIENT,
                           client_timeout=CLIENT_TIMEOUT_S, max_upload_mb=1.0, slowloris=20)


def test_zero_errors_under_load_and_attack(measured: dict[str, Any]) -> None:
    for phase in ("warmup", "round1_under_attack", "round2"):
        r = measured[phase]
        assert r["errors"] == 0, (phase, r["error_samples"])
        assert r["ok"] == r["requests"]
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["max"], lat
    assert measured["round1_under_attack"]["requests"] + measured["round2"]["requests"] == \
        CLIENTS * PER_CLIENT


@pytest.mark.parametrize("probe", [
    "connects and sends nothing",
    "half a request line, then silence",
    "headers without the final blank line",
    "headers, 1 KB of a 100 KB body, then silence",
    "declares a 100 MB body",
    "streams a body past the limit (chunked, no length)",
    "TLS handshake bytes on the plain-HTTP port",
    "a request line that is not HTTP",
    "20 connections sending headers, then silence (slowloris)",
])
def test_hostile_client_is_answered_in_time(measured: dict[str, Any], probe: str) -> None:
    by_name = {p["probe"]: p for p in measured["hostile_clients"]}
    p = by_name[probe]
    assert p["ok"], p
    if p["expected"].endswith("408"):
        # Cut off by the timeout, not before it (a legitimate slow start gets its seconds).
        assert p["seconds"] >= CLIENT_TIMEOUT_S - 0.5, p


def test_memory_stays_bounded_and_nothing_is_left_open(measured: dict[str, Any]) -> None:
    mem = measured["memory_mb"]
    assert mem["growth_round2"] < RSS_GROWTH_LIMIT_MB, mem
    assert mem["peak"] < mem["after_warmup"] + 300, mem  # 8 decodes in flight, not more
    assert measured["connections_after"] == 0  # every stalled socket was closed by the server
    assert measured["healthy_after"] and measured["alive_after"]
