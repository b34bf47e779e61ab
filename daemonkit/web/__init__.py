"""The supervisor's web status page: a small HTTP server in threads of its own.

``config`` validates the ``[web]`` section; ``server`` serves the page and its JSON API;
``auth`` decides who may read and who may act; ``metrics`` and ``logtail`` gather what the
page shows without involving the supervisor's loop.
"""
