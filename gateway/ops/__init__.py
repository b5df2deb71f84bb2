"""Operating the gateway: metrics, logs, readiness and drain, and background work
(the fetch statistics writer, the maintenance leader)."""
