"""The HTTP service of a running pipeline: identities, search, camera snapshots, Prometheus metrics, a web page.

``config.py`` (the ``http:`` section), ``metrics.py`` (stage reports -> Prometheus), ``app.py`` (the FastAPI
application), ``server.py`` (uvicorn in a thread of the supervisor), ``static/`` (the page), ``__main__.py`` (a
finished run served again: ``python -m pipeline.service``).
"""
