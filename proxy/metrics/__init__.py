"""Prometheus metrics: their definitions and the `metrics:` settings. No I/O; the listener that
serves them is `citygate.proxy.runtime.metrics_http`."""
