"""Configuration: one settings object, its sources and its redacted description."""

from memvault.config.settings import (
    Settings,
    describe_settings,
    load_settings,
    public_settings,
    redact_url,
    secret_values,
)

__all__ = ["Settings", "describe_settings", "load_settings", "public_settings", "redact_url",
           "secret_values"]
