"""Label mistakes that would otherwise train silently: classes with very few clips, and class names
that look like typos of each other (``Dgo`` among ``Dog``: a typo becomes a class of its own).

:func:`label_warnings` gives one sentence per finding; a dataset logs them before training.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

#: a class with fewer clips than this is reported
FEW_CLIPS = 3
#: a near-duplicate name is suspicious when it has this many times fewer clips than its twin
RARE_RATIO = 10


def edit_distance(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of neighbours that turn ``a`` into ``b``
    (optimal string alignment: ``Dgo`` -> ``Dog`` is 1)."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def _normalised(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.casefold())


def _clips(n: int) -> str:
    return f"{n} clip{'' if n == 1 else 's'}"


def label_warnings(labels: Sequence[Sequence[str]], classes: Sequence[str], is_test: np.ndarray,
                   check_names: bool = True) -> list[str]:
    """Warnings about the labels of the clips used (``labels[i]`` of clip ``i``, evaluated where ``is_test``).

    * a class with fewer than :data:`FEW_CLIPS` clips, or with no training clip (it cannot be learnt);
    * with ``check_names`` (off when the classes were listed on purpose): two names that are equal
      but for case and punctuation, or one edit apart (a letter added, dropped, changed or two
      swapped) where one has :data:`RARE_RATIO` times fewer clips than the other, or fewer than
      :data:`FEW_CLIPS`.
    """
    train = Counter(label for row, test in zip(labels, is_test, strict=True) if not test for label in row)
    evaluated = Counter(label for row, test in zip(labels, is_test, strict=True) if test for label in row)
    total = {name: train[name] + evaluated[name] for name in classes}
    found = []
    for name in classes:
        if total[name] < FEW_CLIPS or train[name] == 0:
            why = "it cannot be learnt" if train[name] == 0 else "too few to learn or to evaluate it"
            found.append(f"class {name!r} has {_clips(total[name])} ({train[name]} training, {evaluated[name]} "
                         f"evaluated): {why}")
    if check_names:
        for i, a in enumerate(classes):
            for b in classes[i + 1:]:
                rare, common = sorted((a, b), key=lambda name: total[name])
                if _normalised(a) == _normalised(b):
                    how = "differ only in case, spaces or punctuation"
                elif (abs(len(a) - len(b)) <= 1 and min(len(a), len(b)) >= 3 and edit_distance(a, b) == 1
                      and (total[rare] < FEW_CLIPS or total[rare] * RARE_RATIO <= total[common])):
                    how = "are one letter apart"
                else:
                    continue
                found.append(f"classes {rare!r} ({_clips(total[rare])}) and {common!r} ({_clips(total[common])}) "
                             f"{how}: a typo in a label?")
    return found
