"""The one exception the store raises, whatever the job that failed."""

from __future__ import annotations


class ArtefactError(RuntimeError):
    """An artefact is missing, malformed or fails verification."""
