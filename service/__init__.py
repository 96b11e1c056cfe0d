"""rankd's service layer: Starlette routes, auth, settings and background tasks over ``store``.

It translates HTTP and WebSocket requests into store calls and owns no data-structure logic.
Entry points: ``service.cli.main`` (the ``rankd`` command) and ``service.app.create_app``.
"""
