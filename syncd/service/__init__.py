"""What keeps running: the daemon behind `syncd run` and what it serves.

daemon.py        the supervisor: side tasks, signals, watchdog, drain, shutdown
dispatch.py      connects, starts what is due, records outcomes;  scheduler.py  what is due
reloader.py      SIGHUP inside the daemon;  reloadstate.py  its acknowledgement file, which
                 `syncd reload` (`syncd.commands.reload`) waits for
http.py          the HTTP side;  control.py  what it sees of the daemon (`DaemonControl`);
                 readiness.py  /readyz
statusboard.py   per municipality, what the daemon knows now (for /status and the page)
statusquery.py   the query parameters of /status;  statuspage.py (+ .html)  the page at /
notify.py        sd_notify;  clock.py  injected time
runtime.py       how any command runs: its config loaded, its coroutine on uvloop
differ.py        which row differ `run` and `once` use, chosen and said once at start
"""
