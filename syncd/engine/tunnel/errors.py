"""What can fail on the way through an SSH bastion, hop by hop (no SSH library needed: a daemon
without bastions never loads one)."""

from __future__ import annotations

from enum import StrEnum

from syncd.engine.errors import Kind, RetryableError


class Hop(StrEnum):
    """The hops of a tunnelled connection, in order (`syncd check --online` shows each)."""

    REACHABLE = "bastion reachable"
    HOST_KEY = "host key matches"
    AUTHENTICATED = "authenticated"
    FORWARD = "forward accepted"


HOPS = (Hop.REACHABLE, Hop.HOST_KEY, Hop.AUTHENTICATED, Hop.FORWARD)


class TunnelError(RetryableError):
    """A failure on the way through a bastion; `hop` is the first hop that failed."""

    hop = Hop.REACHABLE

    def __init__(self, bastion: str, detail: str, *, retryable: bool | None = None):
        # the kind in the text too: the ledger keeps the text (`syncd status`, the page)
        super().__init__(f"bastion {bastion} ({self.kind}): {detail}")
        self.bastion, self.detail = bastion, detail
        if retryable is not None:
            self.retryable = retryable

    def again(self) -> TunnelError:
        """The same failure, for another session that waited on the same attempt."""
        return type(self)(self.bastion, self.detail, retryable=self.retryable)


class BastionUnreachable(TunnelError):
    kind = Kind.BASTION_UNREACHABLE


class HostKeyMismatch(TunnelError):
    """Security: the bastion (or someone in between) presents another key than the pinned one."""

    kind = Kind.HOST_KEY_MISMATCH
    retryable = False
    hop = Hop.HOST_KEY


class BastionAuthFailed(TunnelError):
    kind = Kind.BASTION_AUTH_FAILED
    retryable = False
    hop = Hop.AUTHENTICATED


class ForwardRefused(TunnelError):
    kind = Kind.FORWARD_REFUSED
    hop = Hop.FORWARD


class TunnelNotConnected(TunnelError):
    """A reverse tunnel whose municipal end is not connected: nothing listens on the bastion's
    loopback port the municipality's `ssh -R` should hold."""

    kind = Kind.TUNNEL_NOT_CONNECTED
    hop = Hop.FORWARD


class KeyFileError(TunnelError):
    """syncd's own key (or its passphrase) cannot be read or opened."""

    kind = Kind.CREDENTIALS
    retryable = False
    hop = Hop.AUTHENTICATED
