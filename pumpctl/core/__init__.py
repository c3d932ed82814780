"""The rules core: pure functions and values (no I/O, no asyncio, no wall clock).

- `rules`: the rule ids of docs/clinical-rules.md, as one enum.
- `protocol`: protocol files as validated data (Table 3 rows, Table 5 rules, variants).
- `planner`: the row of an infusion from the course (L4, L5) and its rate profile (L1-L3, L6).
- `limits`: the rate-limit chain every commanded rate passes (L1, L2, L6, I2).
- `history`, `history_entry`: what a course remembers, and history entered by hand (L8, I10).
- `bag`: the life of a diluted bag (L9); `course`: reinstating a withdrawn course (I8).
- `dose`: dose, schedule, pre- and post-medication, blood profile, eligibility (D1-D6).
- `machine`: the infusion state machine, `decide(state, event, now)` (L, I and A rules).

docs/architecture.md, "Where each rule lives", maps every rule id to its module.
"""
