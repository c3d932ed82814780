"""The core's tests under mutation (scripts/mutation, docs/mutation.md).

`--hypothesis-profile=mutation` (set in pyproject.toml's [tool.mutmut]) makes every property
test draw the same examples on every run and keep no example database: a mutant's verdict then
depends on the mutant alone, not on the order mutants ran in or on what an earlier run found.
"""

from __future__ import annotations

from hypothesis import Phase, settings

# No shrinking under mutation: a mutant's verdict needs only whether a test fails, and
# shrinking a failing stateful run can take longer than mutmut's time limit (a mutant the tests
# do catch would then count as a timeout, not killed).
settings.register_profile(
    "mutation",
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
