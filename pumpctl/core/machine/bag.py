"""L9: a new bag continues the same infusion at the current step with the volume still to give."""

from __future__ import annotations

from datetime import datetime

from pumpctl.core.bag import BagLife, BagState, replace_bag
from pumpctl.core.machine.context import Ctx, Forbidden, pump_may_run, send
from pumpctl.core.machine.events import BagReplaced
from pumpctl.core.machine.ladder import continue_same_rate
from pumpctl.core.machine.outputs import AuditType, ClearVolume, SetVtbi
from pumpctl.core.machine.state import InfusionPhase
from pumpctl.core.rules import Rule


def on_bag_replaced(ctx: Ctx, event: BagReplaced, now: datetime) -> None:
    """L9: a new bag continues at the current step with the volume still to give."""
    s = ctx.state
    if event.prepared_at > now:
        raise Forbidden(Rule.L9, "prepared_at is in the future")
    life = BagLife.from_protocol(s.protocol.bag, event.prepared_at)
    if life.status(now).state is BagState.EXPIRED:
        raise Forbidden(
            Rule.L9, f"the new bag is past its {life.stability_min / 60:g} h stability already"
        )
    if s.phase is InfusionPhase.PLANNED:
        ctx.set(bag_prepared_at=event.prepared_at, bag_warned=False, bag_expired=False)
        ctx.log(AuditType.BAG_REPLACED, Rule.L9, now, actor=event.actor, volume_ml=s.bag_volume_ml)
        return
    if pump_may_run(s):
        raise Forbidden(Rule.L9, "the pump is running: a bag is changed only while it is stopped")
    if s.remaining_ml <= 0:
        raise Forbidden(Rule.L3, "nothing is left to give")
    new = replace_bag(s.protocol.bag, event.prepared_at, s.remaining_ml, s.rate_ml_h)
    ctx.set(
        bag_prepared_at=new.bag.prepared_at,
        bag_warned=False,
        bag_expired=False,
        delivered_before_bag_ml=s.delivered_ml,
        bag_infused_ml=0.0,
        bag_volume_ml=new.vtbi_ml,
        vtbi_programmed_ml=None,
        volume_read_ml=None,
    )
    # L9: the pump is programmed with clear-volume and the new VTBI; the baseline resets at
    # their confirmations.
    vtbi = new.vtbi_ml
    send(ctx, ClearVolume)
    send(ctx, lambda i: SetVtbi(i, vtbi))
    ctx.log(AuditType.BAG_REPLACED, Rule.L9, now, actor=event.actor, volume_ml=new.vtbi_ml)
    s = ctx.state
    if s.phase in {InfusionPhase.RUNNING, InfusionPhase.STARTING} and not (s.alarms or s.link_lost):
        continue_same_rate(ctx, Rule.L9, "continue at the current step with a new bag")
