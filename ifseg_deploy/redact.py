"""Credentials in URLs never reach the terminal, logs or output files: ``rtsp://user:pass@host``
is shown as ``rtsp://user:***@host``.
"""

from __future__ import annotations

import re

# scheme://userinfo@ : the userinfo runs to the LAST "@" before the path, as FFmpeg splits it, so a
# password with a raw "@" in it is hidden whole. Quotes and spaces end a URL inside a message.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#'\"<>]*)@")


def _mask(match: re.Match) -> str:
    user, sep, _secret = match["userinfo"].partition(":")
    # "user:secret@" keeps the user name; a lone "token@" (as some services put API tokens) is all secret
    return f"{match['scheme']}{user}:***@" if sep else f"{match['scheme']}***@"


def redact_url(text: str) -> str:
    """``text`` with the password (or a lone token) of every ``scheme://userinfo@host`` URL in it
    replaced by ``***``; everything else unchanged.

    >>> redact_url("cannot open 'rtsp://admin:S3cret@10.0.0.5:554/live'")
    "cannot open 'rtsp://admin:***@10.0.0.5:554/live'"
    """
    return _USERINFO.sub(_mask, text)
