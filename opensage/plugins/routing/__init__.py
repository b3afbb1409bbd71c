"""The ``intent-router`` plugin: the packaged answer to ``route_intent``.

It is registered ``trylast``, so any other plugin's ``route_intent`` answers first;
it always answers (a route, or ``none``). The work is done by :mod:`opensage.plugins.routing.routing`,
imported on first use so that start-up stays fast.
"""

from __future__ import annotations

from opensage.hookspecs import hookimpl


@hookimpl(trylast=True)
def route_intent(session, text):
    """Route ``text`` with the packaged routes merged with the session's project
    overrides (``.opencode/intent-routes.yaml``); packaged routes only without a session.

    :returns: an :class:`opensage.types.Route` (``route="none"``, ``command=None`` when
        nothing should fire).
    """
    from opensage.plugins.routing.routing import router_for

    router, _warning = router_for(session.workspace if session is not None else None)
    # a preview session (``opensage route``) has an empty id: session arguments stay unfilled
    return router.decide(text, session_id=(session.id or None) if session is not None else None).to_route()
