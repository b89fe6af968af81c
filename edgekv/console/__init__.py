"""The operator web console served at ``/ui/``: static assets and the metrics history.

``static/`` holds the page as plain ES modules, CSS and HTML, shipped as package
data: no build step, nothing to install in a browser. :mod:`.sampler` keeps the
last hour of the node's own metrics for the console's charts. The routes that
serve both are in ``edgekv/http/console_routes.py`` and ``admin_routes.py``.
"""
