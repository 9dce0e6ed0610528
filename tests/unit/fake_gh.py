"""A fake `gh` for the publish tests: the release subcommands publishing uses, over a JSON state file.

    FAKE_GH_STATE  the state file: {"tags": [...], "releases": {tag: {"draft", "title", "notes",
                   "assets": {name: {"size", "state", "sha256"}}}}}
    FAKE_GH_CALLS  every call's argv is appended to it as a JSON line
    FAKE_GH_HANG   OP:N[:M] makes the N-th to M-th calls (default: the N-th only) of OP hang (sleep) after
                   writing their pid to FAKE_GH_PIDS, before they change anything
    FAKE_GH_FAIL   OP:N:WHEN fails the N-th call (1-based) of OP (view, create, edit, upload,
                   delete-asset, publish: an edit with --draft=false) with exit 1, WHEN being
                   `before` (nothing changed), `after` (the change was made, then the failure) or, for
                   upload, `partial` (half the bytes arrived, the asset is left in state "starter")

Option parsing is strict where it matters to the tests: positional arguments are only taken after `--`,
so a call that puts a tag or a file where an option could be read fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path


def fail(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def split(args: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    if "--" not in args:
        fail(f"fake gh: positional arguments must follow `--`: {args}", 2)
    cut = args.index("--")
    opts: dict[str, str | bool] = {}
    flags = args[:cut]
    i = 0
    while i < len(flags):
        flag = flags[i]
        if "=" in flag:
            key, value = flag.split("=", 1)
            opts[key] = value
        elif flag in ("--title", "--notes-file", "--json"):
            opts[flag] = flags[i + 1]
            i += 1
        elif flag in ("--draft", "--verify-tag", "--clobber", "--yes", "--prerelease"):
            opts[flag] = True
        else:
            fail(f"fake gh: unknown flag {flag}", 2)
        i += 1
    return opts, args[cut + 1:]


def main(argv: list[str]) -> None:
    state_file = Path(os.environ["FAKE_GH_STATE"])
    state = json.loads(state_file.read_text())
    with open(os.environ["FAKE_GH_CALLS"], "a") as calls:
        calls.write(json.dumps(argv) + "\n")
    if argv[:1] != ["release"] or len(argv) < 2:
        fail(f"fake gh: unsupported command {argv}", 2)
    sub = argv[1]
    opts, pos = split(argv[2:])
    op = "publish" if sub == "edit" and opts.get("--draft") == "false" else sub

    counts = state.setdefault("counts", {})
    counts[op] = counts.get(op, 0) + 1
    when = None
    if spec := os.environ.get("FAKE_GH_FAIL"):
        f_op, f_n, f_when = spec.split(":")
        if f_op == op and int(f_n) == counts[op]:
            when = f_when

    def save() -> None:
        state_file.write_text(json.dumps(state, indent=1))

    def injected() -> None:
        save()
        fail(f"HTTP 502: injected failure of {op} ({when})")

    if hang := os.environ.get("FAKE_GH_HANG"):
        h_op, first, *last = hang.split(":")
        if h_op == op and int(first) <= counts[op] <= int((last or [first])[0]):
            save()
            with open(os.environ["FAKE_GH_PIDS"], "a") as pids:
                pids.write(f"{os.getpid()}\n")
            time.sleep(3600)

    if when == "before":
        injected()

    releases = state.setdefault("releases", {})
    tag = pos[0] if pos else fail("fake gh: no tag", 2)
    release = releases.get(tag)

    if sub == "view":
        save()
        if release is None:
            fail("release not found")
        fields = opts["--json"].split(",")
        data = {"tagName": tag, "isDraft": release["draft"], "url": f"https://example.invalid/{tag}",
                "isPrerelease": release.get("prerelease", False),
                "assets": [{"name": n, "size": a["size"], "state": a["state"]}
                           for n, a in sorted(release["assets"].items())]}
        print(json.dumps({k: data[k] for k in fields}))
        return
    if sub == "create":
        if tag not in state["tags"] and opts.get("--verify-tag"):
            fail(f"tag {tag} doesn't exist in the repo, aborting due to --verify-tag flag")
        if release is not None and release["draft"] is False:
            fail(f"a release with the same tag name already exists: {tag}")
        # Like GitHub: a second create makes a second draft; the tests must never need that.
        if release is not None:
            state.setdefault("duplicates", []).append(tag)
        releases[tag] = {"draft": bool(opts.get("--draft")), "title": opts["--title"],
                         "prerelease": opts.get("--prerelease") in (True, "true"),
                         "notes": Path(opts["--notes-file"]).read_text(), "assets": {}}
    elif release is None:
        fail("release not found")
    elif sub == "edit":
        if "--title" in opts:
            release["title"] = opts["--title"]
        if "--notes-file" in opts:
            release["notes"] = Path(opts["--notes-file"]).read_text()
        if "--draft" in opts:
            release["draft"] = opts["--draft"] != "false"
        if "--prerelease" in opts:
            release["prerelease"] = opts["--prerelease"] in (True, "true")
    elif sub == "upload":
        for file in pos[1:]:
            path = Path(file)
            data = path.read_bytes()
            if path.name in release["assets"] and not opts.get("--clobber"):
                fail(f"asset under the same name already exists: [{path.name}]")
            if when == "partial":
                release["assets"][path.name] = {"size": len(data) // 2, "state": "starter", "sha256": ""}
                injected()
            release["assets"][path.name] = {"size": len(data), "state": "uploaded",
                                            "sha256": hashlib.sha256(data).hexdigest()}
    elif sub == "delete-asset":
        if not opts.get("--yes"):
            fail("fake gh: delete-asset would prompt", 2)
        if pos[1] not in release["assets"]:
            fail(f"asset {pos[1]} not found in release {tag}")
        del release["assets"][pos[1]]
    else:
        fail(f"fake gh: unsupported release subcommand {sub}", 2)

    if when == "after":
        injected()
    save()


if __name__ == "__main__":
    main(sys.argv[1:])
