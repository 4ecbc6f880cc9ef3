"""`rlkd operator` parses its scope, and the other subcommands never load kopf."""

from __future__ import annotations

import subprocess
import sys

from rlkd.cli import main


def test_the_operator_needs_a_scope(capsys) -> None:
    assert main(["operator"]) == 1
    assert "--namespace NS" in capsys.readouterr().err


def test_offline_subcommands_do_not_import_kopf() -> None:
    code = (
        "import sys, contextlib, io; from rlkd.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['crd'])\n"
        "assert not {'kopf', 'rlkd_operator', 'prometheus_client'} & set(sys.modules), sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
