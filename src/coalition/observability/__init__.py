"""What operations needs to see the hub: Prometheus metrics and structured JSON logs."""
