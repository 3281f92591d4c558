"""The README documents what the code does: every RVPO_* setting, every CLI command, the two set-up commands."""

from __future__ import annotations

import re

from rvpo.settings_table import env_rows
from tests.procs import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table():
    missing = [env for env, *_ in env_rows() if f"`{env}`" not in README]
    assert not missing, f"README lacks {missing}: regenerate the table with `rvpo settings --markdown`"


def test_every_cli_command_is_documented_and_exists():
    from typer.main import get_command

    from rvpo.cli import app

    commands = set(get_command(app).commands)
    documented = set(re.findall(r"`rvpo (\w+)", README))
    assert documented <= commands, f"README names unknown commands {documented - commands}"
    assert commands <= documented, f"README does not document {commands - documented}"


def test_the_two_setup_commands_exist_in_the_makefile():
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in README and re.search(rf"^{target}:", makefile, re.M)
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_no_unfilled_placeholders():
    placeholders = re.findall(r"^[A-Z][A-Z_]{4,}$", README, re.M)
    assert not placeholders, f"README still has placeholders {placeholders}"
