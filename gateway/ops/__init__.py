"""Operating the gateway: metrics, logs, readiness and drain, and background work."""
