"""``ifseg-deploy app``: watch the segmentation of one or more video sources live in a browser and change
the category list while it runs (any backend, no model reload).

Modules: ``session`` (the model, one tile per source on the streaming pipeline, newest results,
category changes, recordings), ``server`` (aiohttp: the page, the HTTP API, one WebSocket per browser),
``static/`` (the page: plain HTML, JavaScript and CSS, no build step).
"""

from .session import Session

__all__ = ["Session"]
