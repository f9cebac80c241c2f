"""`crucible lake check|restore|migrate` on real lakes, through click's runner and as the installed command."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from crucible.cli import main
from crucible.lake import DeltaLake
from schemas import EVAL_RESULTS, EXAMPLES, QUARANTINE

FIXTURE = Path(__file__).parents[1] / "fixtures" / "lake_v1"


def lake_with_examples(root: Path) -> DeltaLake:
    lake = DeltaLake(root)
    for n in (1, 2, 3):
        lake.replace_where(EXAMPLES, pd.DataFrame([
            {"dataset": "gsm8k", "split": "train", "example_id": str(i), "input": "q", "target": "a",
             "messages": "[]", "metadata": "{}", "source": f"f:{i}"} for i in range(n)]), {"dataset": "gsm8k"})
    return lake


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def by_table(output: str) -> dict[str, dict]:
    return {t["table"]: t for t in json.loads(output)["tables"]}


def test_check_reports_ok_not_created_and_broken_tables_with_exit_code(tmp_path):
    root = tmp_path / "lake"
    lake_with_examples(root)
    (root / "stray" / "table").mkdir(parents=True)
    (root / "stray" / "table" / "part-0.parquet").write_bytes(b"PAR1")
    result = invoke("lake", "check", "--root", str(root), "--json")
    assert result.exit_code == 1
    tables = by_table(result.output)
    assert (tables["datasets/examples"]["status"], tables["datasets/examples"]["version"],
            tables["datasets/examples"]["rows"], tables["datasets/examples"]["schema_version"]) == ("ok", 3, 3, 1)
    assert tables["quarantine/rows"]["status"] == "not created"
    assert tables["stray/table"]["status"] == "broken" and "no Delta log" in tables["stray/table"]["problem"]

    shutil.rmtree(root / "stray")
    assert invoke("lake", "check", "--root", str(root)).exit_code == 0


def test_check_then_restore_a_table_with_a_corrupted_newest_commit(tmp_path):
    root = tmp_path / "lake"
    lake_with_examples(root)
    (root / "datasets" / "examples" / "_delta_log" / "00000000000000000003.json").write_text("{cut")
    checked = invoke("lake", "check", "--root", str(root))
    assert checked.exit_code == 1 and "broken" in checked.output and "crucible lake restore" in checked.output

    restored = invoke("lake", "restore", "datasets/examples", "--version", "2", "--root", str(root))
    assert restored.exit_code == 0
    assert "moved 1 unreadable log files (00000000000000000003.json)" in restored.output
    assert "_crucible_unreadable_commits_" in restored.output
    assert by_table(invoke("lake", "check", "--root", str(root), "--json").output)["datasets/examples"]["rows"] == 2

    again = invoke("lake", "restore", "datasets/examples", "--version", "1", "--root", str(root), "--json")
    assert json.loads(again.output)["version"] == 3  # a RESTORE commit on a readable table
    missing = invoke("lake", "restore", "datasets/examples", "--version", "99", "--root", str(root))
    assert missing.exit_code == 1 and "version 99 does not exist" in missing.output


def test_migrate_dry_run_then_apply_then_nothing_pending(tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(FIXTURE, root)
    checked = by_table(invoke("lake", "check", "--root", str(root), "--json").output)
    assert {table: (t["schema_version"], t["expected_schema_version"], t["pending_migrations"])
            for table, t in checked.items() if t["pending_migrations"]} == {
        "evaluation/results": (1, 2, ["evaluation/results@1->2"]),
        "evaluation/summaries": (1, 2, ["evaluation/summaries@1->2"]),
        "quarantine/rows": (1, 3, ["quarantine/rows@1->2", "quarantine/rows@2->3"]),
    }
    text = invoke("lake", "check", "--root", str(root))
    assert text.exit_code == 0 and "v1 (code v2)" in text.output and "run `crucible lake migrate`" in text.output
    dry = json.loads(invoke("lake", "migrate", "--dry-run", "--root", str(root), "--json").output)
    assert [(s["step_id"], s["status"]) for s in dry["steps"]] == [
        ("evaluation/results@1->2", "pending"), ("evaluation/summaries@1->2", "pending"),
        ("quarantine/rows@1->2", "pending"), ("quarantine/rows@2->3", "pending")]
    assert DeltaLake(root).stored_schema_version(QUARANTINE) == 1
    assert DeltaLake(root).stored_schema_version(EVAL_RESULTS) == 1
    applied = invoke("lake", "migrate", "--root", str(root))
    assert applied.exit_code == 0 and "quarantine/rows@2->3" in applied.output
    assert "evaluation/summaries@1->2" in applied.output
    assert "no pending migrations" in invoke("lake", "migrate", "--root", str(root)).output
    after = by_table(invoke("lake", "check", "--root", str(root), "--json").output)
    assert (after["quarantine/rows"]["schema_version"], after["evaluation/results"]["schema_version"],
            after["evaluation/results"]["rows"], after["evaluation/summaries"]["schema_version"]) == (3, 2, 3, 2)
    assert not any(t["pending_migrations"] for t in after.values())


def test_installed_command_checks_a_lake_in_a_real_process(tmp_path):
    root = tmp_path / "lake"
    lake_with_examples(root)
    command = Path(sys.executable).parent / "crucible"
    ok = subprocess.run([str(command), "lake", "check", "--root", str(root)], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "datasets/examples" in ok.stdout and "ok" in ok.stdout
    shutil.rmtree(root / "datasets" / "examples" / "_delta_log")
    broken = subprocess.run([str(command), "lake", "check", "--root", str(root), "--json"], capture_output=True,
                            text=True, timeout=120)
    assert broken.returncode == 1
    assert by_table(broken.stdout)["datasets/examples"]["status"] == "broken"
    nowhere = subprocess.run([str(command), "lake", "check", "--root", str(tmp_path / "nope")], capture_output=True,
                             text=True, timeout=120)
    assert nowhere.returncode == 1 and "no lake at" in nowhere.stderr
