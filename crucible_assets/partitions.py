"""Partitions, declared once: datasets by name (users add their own at run time) and days."""

import dagster as dg

datasets_partitions = dg.DynamicPartitionsDefinition(name="datasets")

FEEDBACK_START = "2026-11-01"
daily_partitions = dg.DailyPartitionsDefinition(start_date=FEEDBACK_START, end_offset=1)
