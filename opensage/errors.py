"""The two error families of opensage.

* :class:`UsageError` — the user (or the host's model) asked for something malformed or
  impossible: bad arguments, an unknown node id, an invalid YAML file. Raised *before*
  anything is written; the message says what was wrong and how to fix it. The CLI
  exits with code 2.
* :class:`OpenSageError` — everything else that goes wrong at run time (a model that
  keeps returning invalid output, a sandbox that cannot start). The CLI exits with 1.
"""

from __future__ import annotations

__all__ = [
    "OpenSageError",
    "UsageError",
    "NotFoundError",
    "ConfigError",
    "ModelError",
    "ModelNotConfigured",
    "SandboxError",
    "PluginError",
    "StoreUnavailable",
]


class OpenSageError(Exception):
    """A run-time failure. ``str(err)`` is a message fit to show a user."""

    exit_code = 1


class UsageError(OpenSageError):
    """Malformed or impossible input; nothing was changed. Exit code 2."""

    exit_code = 2


class NotFoundError(UsageError):
    """A node, agent, tool, job or session named by the user does not exist."""


class ConfigError(UsageError):
    """A configuration file (YAML/JSON) is invalid; the message names file and field."""


class ModelError(OpenSageError):
    """The model could not produce a usable answer (provider error, invalid output)."""


class ModelNotConfigured(UsageError):
    """No model is configured but the command needs one."""


class SandboxError(OpenSageError):
    """The sandbox could not run a tool at the required isolation level."""


class PluginError(UsageError):
    """A plugin cannot be loaded: it implements a hook that does not exist (a misspelt
    name) or with arguments the hookspec lacks. Raised at start-up, naming the plugin."""


class StoreUnavailable(OpenSageError):
    """The team store (a PostgreSQL server, ``OPENSAGE_DATABASE_URL``) cannot be reached.

    The message names the URL with its password redacted. Commands exit 1; hooks queue the
    event locally instead (docs/team.md). Never a silent fall-back to another store.
    """
