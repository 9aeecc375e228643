"""What syncd tells: traces and logs, Prometheus metrics, and reports for people.

telemetry.py     traces (OpenTelemetry) and the logs that point at them
metrics.py       Prometheus: every `syncd_*` metric, exported from 0 with every label value
process.py       `syncd_process_*`: memory, CPU, open files, start time
report.py        for people the progress line, a pass's summary and the status table; for
                 machines `syncd once --json`
"""
