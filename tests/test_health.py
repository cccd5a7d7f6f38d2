"""The worker's health checks and the settings behind them (pure; the served pages: tests/test_worker_health.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from monitor.health import Progress, readiness
from monitor.kafka.security import client_options, faust_credentials
from monitor.settings import KafkaSecurity, Settings, SettingsError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_worker_stays_alive_however_long() -> None:
    clock = Clock()
    progress = Progress(60.0, clock)
    clock.now += 3600
    progress.measured(0, 0)
    assert progress.liveness().ok


def test_chunks_waiting_with_no_progress_fail_liveness_after_the_stall_limit() -> None:
    clock = Clock()
    progress = Progress(60.0, clock)
    clock.now += 3600  # a quiet hour, then chunks arrive: waiting starts now
    progress.measured(5, 0)
    assert progress.liveness().ok
    clock.now += 59
    progress.measured(8, 0)
    assert progress.liveness().ok
    clock.now += 2
    check = progress.liveness()
    assert not check.ok and check.status == 503
    assert "8 chunks wait" in check.reason and "CASTWATCH_STALL_SECONDS=60" in check.reason


def test_processing_a_message_resets_the_stall_clock() -> None:
    clock = Clock()
    progress = Progress(60.0, clock)
    progress.measured(5, 0)
    clock.now += 50
    progress.advanced()
    clock.now += 50
    assert progress.liveness().ok
    clock.now += 11
    assert not progress.liveness().ok


def test_database_retries_count_as_progress() -> None:
    clock = Clock()
    progress = Progress(60.0, clock)
    progress.measured(5, 0)
    for failures in range(1, 20):  # the store retries through a long database outage
        clock.now += 30
        progress.measured(5, failures)
        assert progress.liveness().ok
    clock.now += 61
    progress.measured(5, 19)
    assert not progress.liveness().ok


@pytest.mark.parametrize(
    ("running", "partitions", "rebalancing", "ok", "words"),
    [
        (True, 3, False, True, "3 partitions"),
        (True, 0, True, True, "rebalancing"),
        (True, 0, False, False, "more workers than partitions"),
        (False, 2, False, False, "not running"),
    ],
)
def test_readiness(running: bool, partitions: int, rebalancing: bool, ok: bool, words: str) -> None:
    check = readiness(running, partitions, rebalancing)
    assert check.ok is ok and check.status == (200 if ok else 503) and words in check.reason


def test_worker_settings_from_the_environment() -> None:
    defaults = Settings.from_env({})
    assert defaults.web_host == "127.0.0.1" and defaults.stall_seconds == 300.0
    assert defaults.kafka_security == KafkaSecurity()
    configured = Settings.from_env({"CASTWATCH_WEB_HOST": "0.0.0.0", "CASTWATCH_STALL_SECONDS": "90"})
    assert configured.web_host == "0.0.0.0" and configured.stall_seconds == 90.0


@pytest.mark.parametrize("bad", ["soon", "0", "-5"])
def test_bad_stall_seconds_is_refused_by_name(bad: str) -> None:
    with pytest.raises(SettingsError, match=f"CASTWATCH_STALL_SECONDS='{bad}'"):
        Settings.from_env({"CASTWATCH_STALL_SECONDS": bad})


def test_plaintext_kafka_needs_no_options() -> None:
    assert client_options(KafkaSecurity()) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(KafkaSecurity()) is None


def test_sasl_over_tls_gives_aiokafka_and_faust_the_same_settings() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    security = KafkaSecurity.from_env(
        {"CASTWATCH_KAFKA_SECURITY": "sasl_ssl", "CASTWATCH_KAFKA_SASL_MECHANISM": "scram-sha-512",
         "CASTWATCH_KAFKA_USERNAME": "worker", "CASTWATCH_KAFKA_PASSWORD": "s3cret"}
    )  # fmt: skip
    assert "s3cret" not in repr(security)
    options = client_options(security)
    assert isinstance(options.pop("ssl_context"), ssl.SSLContext)
    assert options == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "worker", "sasl_plain_password": "s3cret",
    }  # fmt: skip
    faust_side = credentials_to_aiokafka_auth(faust_credentials(security))
    assert isinstance(faust_side.pop("ssl_context"), ssl.SSLContext)
    assert faust_side == options


def test_tls_without_sasl() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    security = KafkaSecurity.from_env({"CASTWATCH_KAFKA_SECURITY": "SSL"})
    assert client_options(security)["security_protocol"] == "SSL"
    assert credentials_to_aiokafka_auth(faust_credentials(security))["security_protocol"] == "SSL"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CASTWATCH_KAFKA_SECURITY": "kerberos"}, "expected one of PLAINTEXT, SSL"),
        ({"CASTWATCH_KAFKA_SECURITY": "SASL_SSL", "CASTWATCH_KAFKA_USERNAME": "u"}, "needs CASTWATCH_KAFKA_USERNAME and"),
        ({"CASTWATCH_KAFKA_SECURITY": "SASL_SSL", "CASTWATCH_KAFKA_USERNAME": "u", "CASTWATCH_KAFKA_PASSWORD": "p",
          "CASTWATCH_KAFKA_SASL_MECHANISM": "GSSAPI"}, "expected one of PLAIN, SCRAM"),  # fmt: skip
        ({"CASTWATCH_KAFKA_CA_FILE": "/etc/ca.pem"}, "CASTWATCH_KAFKA_CA_FILE set but CASTWATCH_KAFKA_SECURITY=PLAINTEXT"),
        ({"CASTWATCH_KAFKA_SECURITY": "SSL", "CASTWATCH_KAFKA_CERT_FILE": "/etc/me.pem"}, "go together"),
    ],
)
def test_bad_kafka_security_settings_say_what_to_set(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(env)


def test_a_missing_ca_file_is_a_settings_error(tmp_path: Path) -> None:
    security = KafkaSecurity.from_env({"CASTWATCH_KAFKA_SECURITY": "SSL", "CASTWATCH_KAFKA_CA_FILE": str(tmp_path / "ca.pem")})
    with pytest.raises(SettingsError, match="cannot load the Kafka TLS files .*ca.pem"):
        client_options(security)


def test_lag_of_partitions_a_rebalance_moved_away_is_dropped() -> None:
    from monitor import metrics

    def exported() -> dict[str, float]:
        return {s.labels["partition"]: s.value for m in metrics.LAG.collect() for s in m.samples}

    metrics.lag_measured({0: 5, 1: 0, 2: 7})
    assert exported() == {"0": 5, "1": 0, "2": 7}
    metrics.lag_measured({2: 3})
    assert exported() == {"2": 3}
