"""The production compose stack has no open doors: no default or literal secret, no port on
all interfaces, no PLAINTEXT Kafka listener reachable from outside, and least-privilege users
in Redis and ClickHouse. The checks read the files an operator runs, and are shown to catch
the doors the stack used to have."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
KAFKA_START = ROOT / "deploy" / "kafka" / "start.sh"
REDIS_ACL = ROOT / "deploy" / "redis" / "users.acl.template"
CLICKHOUSE_USERS = ROOT / "deploy" / "clickhouse" / "users.d"

_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY\b|CREDENTIAL")


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def default_secrets(text: str) -> list[str]:
    """`${NAME:-default}` or `${NAME-default}` of a secret: it would start with that value."""
    return [
        f"{name}{how}{default}"
        for name, how, default in _VARIABLE.findall(text)
        if _SECRET_NAME.search(name) and how in (":-", "-")
    ]


def literal_secrets(compose: dict[str, Any]) -> list[str]:
    """Secret-named environment entries whose value is written in the file."""
    found = []
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.partition("=")[::2] for e in env)
        for key, value in items:
            text = str(value)
            if _SECRET_NAME.search(key) and text and not _VARIABLE.fullmatch(text):
                found.append(f"{name}.{key}")
            for secret_in_url in re.findall(r"://[^:/@]+:([^@]+)@", text):
                if not _VARIABLE.fullmatch(secret_in_url):
                    found.append(f"{name}.{key} (password in URL)")
    return found


def resolved(text: str, env: dict[str, str]) -> str:
    """Compose interpolation with the values of `env` (.env.example)."""

    def value(match: re.Match[str]) -> str:
        name, how, default = match.groups()
        if env.get(name):
            return env[name]
        if how in (":-", "-"):
            return default
        raise AssertionError(f"${{{name}}} has no value in .env.example and no default")

    return _VARIABLE.sub(value, text)


def open_ports(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    """Published ports that listen on every interface (no host address, or 0.0.0.0 / ::)."""
    found = []
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            spec = resolved(str(port), env)
            parts = spec.rsplit(":", 2)
            host = parts[0] if len(parts) == 3 else ""
            if host.strip("[]") in ("", "0.0.0.0", "::"):  # noqa: S104 - what is looked for
                found.append(f"{name}: {port}")
    return found


def outside_plaintext(properties: dict[str, str], published: set[int]) -> list[str]:
    """PLAINTEXT listeners that are advertised, bound beyond the loopback, or published."""
    protocols = dict(
        p.split(":", 1) for p in properties["listener.security.protocol.map"].split(",")
    )
    advertised = {a.split("://")[0] for a in properties.get("advertised.listeners", "").split(",")}
    found = []
    for listener in properties["listeners"].split(","):
        name, _, where = listener.partition("://")
        host, _, port = where.rpartition(":")
        if protocols.get(name) != "PLAINTEXT":
            continue
        if host not in ("127.0.0.1", "localhost", "[::1]") or name in advertised:
            found.append(listener)
        elif int(port) in published:
            found.append(f"{listener} (published)")
    return found


def kafka_properties(env: dict[str, str]) -> dict[str, str]:
    """server.properties as deploy/kafka/start.sh writes it, with .env.example's values."""
    text = KAFKA_START.read_text()
    body = text.split("<<PROPERTIES\n", 1)[1].split("\nPROPERTIES\n", 1)[0]
    props = {}
    for line in resolved(body, {**env, "KAFKA_ADMIN_PASSWORD": "x"}).splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key] = value
    return props


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_no_secret_has_a_default_or_a_value_in_the_file(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert default_secrets(text) == []
    assert literal_secrets(compose) == []
    required = {name for name, how, _ in _VARIABLE.findall(text) if how in (":?", "?")}
    secrets = {name for name, _, _ in _VARIABLE.findall(text) if _SECRET_NAME.search(name)}
    assert secrets <= required  # compose refuses to start without each of them
    example = env_example()
    assert required <= set(example), "every required variable is documented in .env.example"
    assert {n: v for n, v in example.items() if _SECRET_NAME.search(n) and v} == {}


def test_no_port_is_published_on_every_interface(compose: dict[str, Any]) -> None:
    assert open_ports(compose, env_example()) == []
    assert env_example()["ECRM_BIND_ADDRESS"] == "127.0.0.1"


def test_kafka_takes_no_plaintext_client_from_outside(compose: dict[str, Any]) -> None:
    env = env_example()
    props = kafka_properties(env)
    published = {
        int(resolved(str(p), env).rsplit(":", 1)[1]) for p in compose["services"]["kafka"]["ports"]
    }
    assert outside_plaintext(props, published) == []
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert "StandardAuthorizer" in props["authorizer.class.name"]
    assert not any(
        k.startswith("KAFKA_LISTENER") for k in compose["services"]["kafka"]["environment"]
    )


def test_redis_and_clickhouse_users_have_least_privilege() -> None:
    acl = [line.split() for line in REDIS_ACL.read_text().splitlines() if line.startswith("user ")]
    users = {line[1]: line[2:] for line in acl}
    assert users["default"] == ["off"]
    worker = users["worker"]
    assert "~ecrm:*" in worker and "-@all" in worker and "+@all" not in worker
    assert not {"+flushall", "+flushdb", "+config", "+keys", "+acl", "+debug"} & set(worker)
    ecrm = (CLICKHOUSE_USERS / "ecrm.xml").read_text()
    analyst = (CLICKHOUSE_USERS / "analyst.xml").read_text()
    assert ecrm.count("<access_management>1</access_management>") == 1  # `default`, loopback only
    assert "<ip>::/0</ip>" not in ecrm.split("<default", 1)[1]
    assert "<access_management>0</access_management>" in analyst
    assert "GRANT SELECT ON ecrm.*" in analyst and "<readonly>1</readonly>" in analyst
    assert "ON *.*" not in ecrm and "ALL" not in re.findall(r"GRANT ([A-Z ,]+) ON", ecrm)[0]


OLD_DOORS = """
services:
  kafka:
    ports: ["9094:9094"]
    environment:
      KAFKA_LISTENERS: PLAINTEXT://:9092,HOST://:9094
  clickhouse:
    ports: ["8123:8123"]
    environment:
      CLICKHOUSE_PASSWORD: ${CLICKHOUSE_PASSWORD:-secret}
      CLICKHOUSE_ANALYST_PASSWORD: analyst
  worker:
    environment:
      ECRM_CLICKHOUSE_URL: http://ecrm:secret@clickhouse:8123/ecrm
"""


def test_the_checks_catch_the_doors_the_stack_used_to_have() -> None:
    old = yaml.safe_load(OLD_DOORS)
    assert default_secrets(OLD_DOORS) == ["CLICKHOUSE_PASSWORD:-secret"]
    assert literal_secrets(old) == [
        "clickhouse.CLICKHOUSE_ANALYST_PASSWORD",
        "worker.ECRM_CLICKHOUSE_URL (password in URL)",
    ]
    assert open_ports(old, {}) == ["kafka: 9094:9094", "clickhouse: 8123:8123"]
    props = {
        "listeners": "PLAINTEXT://:9092,CONTROLLER://127.0.0.1:9093,HOST://:9094",
        "advertised.listeners": "PLAINTEXT://kafka:9092,HOST://localhost:9094",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,HOST:PLAINTEXT",
    }
    assert outside_plaintext(props, {9094}) == ["PLAINTEXT://:9092", "HOST://:9094"]
