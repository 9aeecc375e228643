"""What keeps running and what an operator runs: the daemon's supervisor, dispatcher, scheduler and
reloads, the HTTP side and the status page, systemd notifications, and the one-shot commands."""
