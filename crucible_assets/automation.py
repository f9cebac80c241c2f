"""Declarative automation conditions: which assets follow their inputs by themselves, and what they wait for.

Conditions are evaluated by the automation condition sensor (the daemon that ``dagster dev`` starts; turn
``default_automation_condition_sensor`` on in the UI's Automation page). Backfills of past days stay a person's
decision (the Materialize dialog): the daily conditions look at the latest day only.
"""

import dagster as dg


def after_new_feedback(*ignored: dg.AssetKey) -> dg.AutomationCondition:
    """The latest day again whenever one of its inputs lands, once none is missing or being written.

    This is ``eager()``: the day's partition is requested when a dependency updates (or will in the same
    tick, so a day's signals, checks, embeddings and drift report go in one run), never for older days,
    never while a dependency or the asset itself is in progress, and not when the dependency was written by
    a run that also wrote this asset (the daily schedule's). ``ignored`` dependencies neither trigger nor
    block: an unpartitioned snapshot the asset takes itself when there is none (``monitoring/baseline``),
    which would otherwise hold every drift report back until someone materializes it.
    """
    condition = dg.AutomationCondition.eager()
    if ignored:
        condition = condition.ignore(dg.AssetSelection.assets(*ignored))
    return condition.with_label("after_new_feedback")


def evaluate_new_versions() -> dg.AutomationCondition:
    """Every benchmark partition of a model version that appears, once the run that trained it has finished.

    ``on_missing()`` requests partitions that become missing after the condition is switched on: a new key of
    the dynamic model-version dimension (added when a candidate is evaluated) brings one missing partition
    per benchmark. It waits while its dependency is in progress so that it never scores a version while the
    retraining run that produced it is still evaluating that version into the same table slices. Partitions
    missing before the condition was switched on (older versions) are left to a backfill.
    """
    return (dg.AutomationCondition.on_missing() & ~dg.AutomationCondition.any_deps_in_progress()).with_label(
        "evaluate_new_versions")
