"""Operations: the background statistics writer and the maintenance leader (more of
metrics, logs, tracing and readiness live here as they arrive)."""
