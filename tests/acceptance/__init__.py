"""Acceptance lane: the real syncd as a subprocess, Chromium, promtool, sshd, systemd, Airflow."""
