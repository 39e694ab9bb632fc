"""Can the Hugging Face hub be used right now?  Decided once per process in at most a few seconds.

Without this a hub name on a machine without network costs transformers' and
huggingface_hub's retries (26 s, each warning printed twice) before a
traceback; with it the user gets one line that says what to do.
"""
from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

_OFFLINE_VARS = {"model": ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"), "dataset": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
PROBE_TIMEOUT_S = 3.0


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline_variable(kind: str = "model") -> str | None:
    """The offline switch that is set for ``kind`` ("model" or "dataset"), if any."""
    return next((v for v in _OFFLINE_VARS[kind] if os.environ.get(v, "") not in ("", "0", "false", "False")), None)


@functools.lru_cache(maxsize=4)
def _reachable(endpoint: str, proxy: str | None) -> bool:
    url = urlparse(proxy or endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def hub_problem(kind: str = "model") -> str | None:
    """Why the hub cannot be used for ``kind`` (offline switch set / no connection), or None when it can be tried."""
    var = offline_variable(kind)
    if var:
        return f"offline ({var} is set)"
    from urllib.request import getproxies

    endpoint = _endpoint()
    scheme = urlparse(endpoint).scheme or "https"
    if not _reachable(endpoint, getproxies().get(scheme)):
        return f"unreachable (no connection to {endpoint} within {PROBE_TIMEOUT_S:g} s)"
    return None


def cached_model_folder(repo_id: str) -> str | None:
    """The local snapshot folder of a hub model already in the Hugging Face cache (None when not cached)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an invalid repo id, an unreadable cache: not cached
        return None
    return os.path.dirname(hit) if isinstance(hit, str) else None


# Error kinds that a hub/download failure can raise (requests' and huggingface_hub's
# HTTP errors are OSErrors; datasets' "not found" errors subclass FileNotFoundError).
# Anything else (ImportError, TypeError, ...) is a bug or an installation problem and
# must reach the user as itself, not as "could not download".
_HUB_ERROR_NAMES = {"DatasetNotFoundError", "DataFilesNotFoundError", "HfHubHTTPError", "RepositoryNotFoundError",
                    "GatedRepoError", "RevisionNotFoundError", "EntryNotFoundError", "LocalEntryNotFoundError",
                    "OfflineModeIsEnabled", "ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout"}


def is_hub_error(exc: BaseException) -> bool:
    """True when ``exc`` looks like a network / hub-name problem (see ``_HUB_ERROR_NAMES``)."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    return any(t.__name__ in _HUB_ERROR_NAMES for t in type(exc).__mro__)
