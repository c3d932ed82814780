"""The core's tests under mutation (scripts/mutation, docs/mutation.md).

`--hypothesis-profile=mutation` (set in pyproject.toml's [tool.mutmut]) makes every property
test draw the same examples on every run and keep no example database: a mutant's verdict then
depends on the mutant alone, not on the order mutants ran in or on what an earlier run found.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("mutation", derandomize=True, database=None)
