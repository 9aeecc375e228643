"""What syncd tells: traces and logs (telemetry), Prometheus metrics, and reports for people."""
