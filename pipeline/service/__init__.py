"""The HTTP service of a running pipeline: identities, search, camera snapshots, Prometheus metrics, web pages.

``config.py`` (the ``http:`` section), ``metrics.py`` (stage reports -> Prometheus), ``app.py`` (the FastAPI
application), ``calibration_api.py`` and ``calibration_site.py`` (the calibration page's routes, and its frames
and files), ``server.py`` (uvicorn in a thread of the supervisor), ``static/`` (the pages), ``__main__.py`` (a
finished run served again: ``python -m pipeline.service``).
"""
