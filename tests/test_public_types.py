"""`pyright --verifytypes durable_jobs --ignoreexternal` reports 100 % type completeness."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


PACKAGE = Path(__file__).resolve().parent.parent / "src" / "durable_jobs"


def test_every_public_symbol_has_a_known_type(tmp_path: Path) -> None:
    # pyright cannot follow the editable install (microsoft/pyright#5473); a plain copy of
    # the package on PYTHONPATH is what a user's site-packages would hold. The mypy plugin
    # is left out: it is an extension of mypy (its classes derive from mypy's, whose types
    # pyright does not resolve in this mode), not part of the library's API; mypy and
    # pyright check it with the rest of src/.
    shutil.copytree(
        PACKAGE, tmp_path / "durable_jobs", ignore=shutil.ignore_patterns("mypy_plugin.py")
    )
    (tmp_path / "pyrightconfig.json").write_text('{"pythonVersion": "3.11"}')
    pyright = Path(sys.executable).parent / "pyright"
    done = subprocess.run(
        [
            str(pyright),
            "--verifytypes",
            "durable_jobs",
            "--ignoreexternal",
            "--outputjson",
            "--pythonpath",
            sys.executable,
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(done.stdout)
    completeness = report["typeCompleteness"]
    assert completeness["packageRootDirectory"] == str(tmp_path / "durable_jobs")
    problems = [
        f"{symbol['name']}: {diagnostic['message']}"
        for symbol in completeness["symbols"]
        if not symbol["isTypeKnown"] or symbol.get("isTypeAmbiguous")
        for diagnostic in symbol["diagnostics"]
    ]
    assert problems == []
    assert completeness["exportedSymbolCounts"]["withKnownType"] > 100
    assert completeness["completenessScore"] == 1
