"""litellm, imported once and configured for opensage.

litellm takes about 2 s to import, so only :mod:`opensage.llm` (every model call) and
:mod:`opensage.testing` (the scripted provider for tests) load it, on first use, through
:func:`load`. Nothing else imports litellm.
"""

from __future__ import annotations

import os

__all__ = ["load"]

_litellm = None


def load():
    """Import litellm once and configure it: the bundled price map (no network fetch,
    ``LITELLM_LOCAL_MODEL_COST_MAP=True``), no telemetry, quiet logging, and unknown
    parameters dropped rather than rejected by providers.

    :returns: the ``litellm`` module.
    :raises ImportError: litellm is not installed (it is a dependency of opensage).
    """
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_LOG", "ERROR")
        import litellm  # noqa: PLC0415 - deliberately lazy

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        litellm.drop_params = True
        _litellm = litellm
    return _litellm
