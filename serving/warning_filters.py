"""The scoring process's Python warning filters, compacted once its model is loaded.

Importing MLflow, scikit-learn, SciPy, NumPy and urllib3 leaves about 15 entries in
`warnings.filters`. scikit-learn >= 1.7 replays the caller's whole filter list around every
joblib task (`sklearn.utils.parallel._FuncWrapper`, scikit-learn PR #30380), and a forest's
predict is one task per tree: with 15 entries that replay costs a 50-tree RandomForest about a
third of its single-row predict time (BENCHMARKS.md, issue 17). One entry replays in a fraction
of that, and serving loses nothing by it: every warning is still shown, once per code location,
in the service's log.
"""

from __future__ import annotations

import logging
import sys
import warnings

log = logging.getLogger(__name__)


def settle(policy: str) -> int:
    """Apply `policy` to this process's warning filters; returns how many entries remain.

    `compact` replaces the filters that imports installed by one: show each warning once per
    code location (Python's "default" action, also for the deprecation warnings Python ignores
    by default). `inherit` keeps them. Filters given with `PYTHONWARNINGS` or `-W` are the
    operator's choice and are always kept.
    """
    if policy == "inherit" or sys.warnoptions:
        return len(warnings.filters)
    before = len(warnings.filters)
    warnings.resetwarnings()
    warnings.simplefilter("default")
    log.debug("warning filters compacted from %d to 1 entry", before)
    return len(warnings.filters)
