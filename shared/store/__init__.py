"""The artefact store: immutable, versioned model folders under one directory.

Layout of ``root``::

    root/
      LATEST                      the name of the version to serve (replaced atomically)
      CANDIDATE                   JSON: the version served beside it, in shadow or canary
                                  mode, with its sample and fraction (replaced atomically;
                                  absent when there is none)
      20261126T170102123Z-3fa9c1/ one published version (never modified after publishing)
        manifest.json             sha256 and size of every other file in the folder
        ...
      .promotions/<version>.json  the promotion decision about each version (not hashed:
                                  it can change, the version cannot)
      .store.lock                 flock'ed by every change of the store
      .staging-<version>/         a version being written; readers never look here
      .staging-<version>.lock     flock'ed by its writer from staging until its promotion
                                  decision is recorded

Publishing writes into a staging folder, flushes every file, renames the folder into place
(atomic on one filesystem) and only then may ``LATEST`` move. A crash at any point leaves the
old state or the new one. Every change of the store (the rename, ``LATEST``, a promotion
record, pruning) happens under one exclusive ``flock`` on ``.store.lock``; reading takes no
lock and relies on the renames being atomic. Moving ``LATEST`` for a trainer is a
compare-and-swap (:meth:`ArtefactStore.promote`): it happens only if ``LATEST`` still names
what the trainer's gate compared against. Leftover staging folders of dead writers are
removed by the next writer; a live writer holds the ``flock`` on its staging lock file.

``CANDIDATE`` moves under the same lock (:meth:`ArtefactStore.set_candidate`,
:meth:`~ArtefactStore.promote_candidate`, :meth:`~ArtefactStore.abort_candidate`), each
decision recorded (SHADOW, CANARY, PROMOTED, ABORTED) before the pointer moves; a promotion
writes ``LATEST`` and then removes ``CANDIDATE``, and a candidate naming what ``LATEST`` names
counts as none. Retention never deletes the candidate.

One module per job: :mod:`~shared.store.durability` (fsync, atomic writes, checksums),
:mod:`~shared.store.names`, :mod:`~shared.store.manifest` (write, read, strict verify),
:mod:`~shared.store.locks`, :mod:`~shared.store.records` (promotion records),
:mod:`~shared.store.reader` (the read side), :mod:`~shared.store.writer` (staging and
publishing), :mod:`~shared.store.promotions` (the decisions about ``LATEST``),
:mod:`~shared.store.rollout` (the candidate and its decisions), :mod:`~shared.store.retention`
(pruning), and :mod:`~shared.store.facade` (:class:`ArtefactStore`). Code outside the package
imports only the names below.
"""

from shared.store.durability import sha256_file, write_atomic
from shared.store.errors import ArtefactError
from shared.store.facade import ArtefactStore
from shared.store.manifest import MANIFEST_FILE, read_manifest, verify, write_manifest
from shared.store.names import (
    CANDIDATE_FILE,
    LATEST_FILE,
    PROMOTIONS_DIR,
    STAGING_PREFIX,
    STORE_LOCK_FILE,
    VERSION_PATTERN,
    new_version_name,
)
from shared.store.reader import MEND_LATEST, VersionInfo
from shared.store.records import (
    ABORTED,
    CANARY,
    PENDING,
    PROMOTED,
    REJECTED,
    SHADOW,
    UNKNOWN,
    Promotion,
)
from shared.store.rollout import DEFAULT_SAMPLE, MEND_CANDIDATE, MODES, Candidate

__all__ = [
    "ABORTED",
    "CANARY",
    "CANDIDATE_FILE",
    "DEFAULT_SAMPLE",
    "LATEST_FILE",
    "MANIFEST_FILE",
    "MEND_CANDIDATE",
    "MEND_LATEST",
    "MODES",
    "PENDING",
    "PROMOTED",
    "PROMOTIONS_DIR",
    "REJECTED",
    "SHADOW",
    "STAGING_PREFIX",
    "STORE_LOCK_FILE",
    "UNKNOWN",
    "VERSION_PATTERN",
    "ArtefactError",
    "ArtefactStore",
    "Candidate",
    "Promotion",
    "VersionInfo",
    "new_version_name",
    "read_manifest",
    "sha256_file",
    "verify",
    "write_atomic",
    "write_manifest",
]
