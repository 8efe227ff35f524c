"""The one root exception of ecrm, with a subclass per adapter, so callers can catch by room."""


class EcrmError(Exception):
    """Anything ecrm raises on purpose."""


class ConfigError(EcrmError):
    """A setting is missing or malformed; never fall back silently."""


class KafkaError(EcrmError):
    """The broker could not be reached or refused a request."""


class RedisStoreError(EcrmError):
    """The Redis table store failed, or another worker fenced this one off a partition."""


class ClickHouseError(EcrmError):
    """A ClickHouse statement failed. `code` is the server's error code when it gave one;
    `transient` says the same statement may well succeed later (an outage, too many parts,
    memory): retry it as it is rather than blame the rows in it."""

    def __init__(self, message: str, *, code: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


class EmbeddedStackError(EcrmError):
    """An embedded service (Tansu, Valkey, chdb) could not be started."""


class RulesError(EcrmError):
    """A rules file is invalid; the message names the rule and the field."""


class AudienceError(EcrmError):
    """An audience cannot be selected: a bad where-clause, query or audience file."""


class DeliveryError(RulesError):
    """A delivery file is invalid (the message names the provider, channel or template and the
    field). A RulesError, so a running `ecrm deliver` keeps the file in force on a bad reload
    (agents/reloading_file.py) as a worker keeps its rules."""
