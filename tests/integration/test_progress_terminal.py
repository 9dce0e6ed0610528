"""What a person at a terminal sees: a real build of the mini project under a pseudo-terminal, as
`nox -s build` runs it, with stage and step positions, ninja's counter as a percentage, and the closing
summary; the full log stays on disk."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

from pipeline import stages

from .conftest import PROJECT, write_matrix

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run_in_terminal(argv: list[str], env: dict[str, str], *, columns: int = 160,
                    limit_s: float = 900) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal as stdin, stdout and stderr; return its exit code and all it
    wrote (carriage returns and escape sequences kept)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(argv, cwd=PROJECT, env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError("the build did not finish in time:\n" + b"".join(chunks).decode()[-3000:])
        return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def screen_lines(text: str) -> list[str]:
    """What stays on the screen: each line as last drawn (a status line redrawn with \\r counts once
    per drawing), escape sequences dropped."""
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        out.extend(ANSI.sub("", part) for part in line.split("\r") if ANSI.sub("", part).strip())
    return out


def test_a_first_build_on_a_terminal_shows_positions_percentages_and_a_summary(
        engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    # A cache of its own: a first build (another test's build of the same hash would be reused).
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit), cache=tmp_path / "cache")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OLLAMA_SOURCE", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "CI")
           and not k.startswith("PIPELINE_")}
    env.update(PIPELINE_CACHE=str(settings.cache), PIPELINE_PATCHES=str(settings.patches_dir), TERM="xterm")
    argv = [sys.executable, "-m", "pipeline", "build", "cpu", "--targets-file", str(settings.targets_file),
            "--dist", str(settings.dist)]
    chosen = [s.name for s in stages.select(stages.STAGES)]
    n = len(chosen)

    # The concise view a terminal gets with --quiet: the pipeline's lines and a status line.
    code, quiet = run_in_terminal([*argv, "--quiet"], env)
    assert code == 0, quiet[-3000:]
    seen = screen_lines(quiet)
    for i, name in enumerate(chosen, 1):
        assert any(line.endswith(f"==> stage {i}/{n} {name}") for line in seen), (name, seen)
    assert any(re.search(r"--> step \d+/\d+ compile CPU$", line) for line in seen), seen
    # ninja's counter of the compile as a percentage, with a time left from its rate (a first build).
    counted = [line for line in seen if re.match(r"\[cpu\] stage \d+/\d+ build, step \d+/\d+ compile CPU: "
                                                 r"\d+/\d+ \(\d+%\)", line)]
    assert counted, seen
    assert any(line.endswith("(100%)") or "(100%);" in line for line in counted), counted
    assert "+ cmake --preset CPU" not in quiet  # the tools' lines stay in the log
    archive = settings.dist / "cpu" / "ollama-1.2.3-cpu.tar.gz"
    assert f"  cpu: {archive}  " in quiet
    assert "built 1 target in " in quiet and "    stages: source " in quiet
    assert f"tar -C ollama-cpu -z -xf {archive} && sudo ollama-cpu/share/ollama/install.sh" in quiet
    log = (settings.dist / "cpu" / "build.log").read_text()
    assert "+ cmake --preset CPU" in log and re.search(r"\] \[\d+/\d+ +\d+%\] ", log)  # ninja's own lines

    # The default view: every line, the pipeline's marked; here every stage is cached.
    code, plain = run_in_terminal(argv, env)
    assert code == 0, plain[-3000:]
    seen = screen_lines(plain)
    assert [line.split("] ", 1)[1] for line in seen if "] ==> " in line] == [
        f"==> stage {i}/{n} {name}" for i, name in enumerate(chosen, 1)]
    assert sum("cached (" in line for line in seen) == n
    assert "built 1 target in " in plain
