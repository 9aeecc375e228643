"""What the lanes share: fault proxy, sshd, Chromium driver, daemon subprocess, fake clock."""
