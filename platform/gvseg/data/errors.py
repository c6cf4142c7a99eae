"""The one error type for bad dataset input.

``DataError(path, reason)`` is a ``ValueError`` whose message is ``"{path}: {reason}"``: it always names the
file (or folder) at fault and says what is wrong with it. Readers raise it for every malformed input
(corrupt image, mask size mismatch, missing JSON field, unknown category, stray label value, empty video,
duplicate frame names, truncated video). With ``on_error="skip"`` the readers collect these instead of
raising and return them next to the videos that did read, so nothing is dropped silently.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep path/reason through pickling (Ray ships errors between processes)
        return (DataError, (self.path, self.reason))
