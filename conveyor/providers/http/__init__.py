"""The HTTP backend: the ``http`` provider, URL downloads under the operator's policy."""

from .fetch import HttpFetch, check_url

__all__ = ["HttpFetch", "check_url"]
