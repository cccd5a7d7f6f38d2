"""Kafka TLS and SASL for castwatch's clients: the worker (faust) and the aiokafka producers and admin.

One ``KafkaSecurity`` (from ``CASTWATCH_KAFKA_*``, monitor/settings.py)
becomes the keyword arguments aiokafka takes, or faust's credentials object;
both carry the same TLS context and SASL settings.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from aiokafka.helpers import create_ssl_context

from monitor.settings import KafkaSecurity, SettingsError

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """The TLS context of ``security`` (None without TLS); a missing or unreadable PEM file is a SettingsError."""
    if not security.tls:
        return None
    try:
        return create_ssl_context(
            cafile=str(security.ca_file) if security.ca_file else None,
            certfile=str(security.cert_file) if security.cert_file else None,
            keyfile=str(security.key_file) if security.key_file else None,
        )
    except (OSError, ssl.SSLError) as e:
        files = [str(f) for f in (security.ca_file, security.cert_file, security.key_file) if f]
        raise SettingsError(f"cannot load the Kafka TLS files {', '.join(files) or '(system CAs)'}: {e}") from e


def client_options(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for aiokafka's producer, consumer and admin client."""
    options: dict[str, Any] = {"security_protocol": security.protocol}
    context = ssl_context(security)
    if context is not None:
        options["ssl_context"] = context
    if security.sasl:
        options.update(
            sasl_mechanism=security.sasl_mechanism,
            sasl_plain_username=security.username,
            sasl_plain_password=security.password,
        )
    return options


def faust_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """The ``broker_credentials`` of a faust App (None for plaintext)."""
    import faust  # the worker's import; producers and the admin client do without it

    context = ssl_context(security)
    if security.sasl:
        return faust.SASLCredentials(
            username=security.username, password=security.password, mechanism=security.sasl_mechanism, ssl_context=context
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
