"""The scoring process's Python warning filters, compacted once its model is loaded.

Importing MLflow, scikit-learn, SciPy, NumPy and urllib3 leaves about 15 entries in
`warnings.filters`. scikit-learn >= 1.7 replays the caller's whole filter list around every
joblib task (`sklearn.utils.parallel._FuncWrapper`, scikit-learn PR #30380), and a forest's
predict is one task per tree: with 15 entries that replay costs a 50-tree RandomForest about a
third of its single-row predict time (BENCHMARKS.md, issue 17). Three entries replay in a
fraction of that and keep what Python shows by default: deprecations stay hidden, every other
warning is shown. (The replay also resets Python's memory of warnings already shown, so with
any filter list a warning raised on every predict is printed on every request.)
"""

from __future__ import annotations

import logging
import sys
import warnings

log = logging.getLogger(__name__)


def settle(policy: str) -> int:
    """Apply `policy` to this process's warning filters; returns how many entries remain.

    `compact` replaces the filters that imports installed by three: ignore deprecation and
    pending-deprecation warnings (as Python does by default outside `__main__`), show every
    other warning (Python's "default" action). `inherit` keeps them. Filters given with
    `PYTHONWARNINGS` or `-W` are the operator's choice and are always kept.
    """
    if policy == "inherit" or sys.warnoptions:
        return len(warnings.filters)
    before = len(warnings.filters)
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning):
        warnings.simplefilter("ignore", category)
    log.debug("warning filters compacted from %d to %d entries", before, len(warnings.filters))
    return len(warnings.filters)
