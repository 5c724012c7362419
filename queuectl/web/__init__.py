"""The web dashboard and /metrics (the `dashboard` extra: starlette, uvicorn, jinja2, prometheus_client).

Nothing here is imported by the CLI until `queuectl dashboard` or `queuectl run --dashboard` asks for it.
`security` holds the rules (who may connect, CSRF), `app` the pages and actions over the library API,
`server` binding and running it (standalone or inside an engine's event loop).
"""
