"""What each CLI command does, one module per command; `syncd.cli` parses the arguments and calls
one function here. Commands run once and exit; what keeps running is `syncd.service`.

    once.py          `syncd once`: one pass, a summary, an exit code
    status.py        `syncd status`: what the ledger says, as a table or JSON
    check.py         `syncd check --online`: what a sync would meet at each source and the
                     destination (checkresult.py what it found, checkreport.py how it shows it)
    config.py        `syncd check-config`, `syncd config print`: the config judged offline
    verify.py        `syncd verify`: does the destination hold exactly the source's rows
    reload.py        `syncd reload`: SIGHUP, then wait for the daemon's acknowledgement
    trigger.py       `syncd trigger`: ask the running daemon to sync sources now
    enroll.py        `syncd tunnel enroll`: a reverse-tunnel port for a municipality
    clidoc.py        `syncd completion bash`, `syncd man`: derived from the parser
"""
