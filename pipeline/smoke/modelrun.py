"""Run a model with an installed package: serve, import the tiny GGUF, generate, report.

The run happens wherever `exec_fn` runs commands (a clean container of the runtime floor, in verify):
one POSIX shell script, which needs nothing but the package's own `ollama` and the floor's coreutils
(no curl, no python). It starts `ollama serve` in the background on a loopback port with its models
in a temporary folder, waits until `ollama list` answers, imports the model with `ollama create`
(Modelfile: FROM the GGUF, greedy sampling, a fixed number of tokens), and generates with
`ollama run MODEL PROMPT --verbose`, which goes through /api/show and /api/generate and prints the
eval count and eval rate on stderr. The script always exits 0 and reports in marked sections (status,
failing step, each command's output, the server log), so a failure still brings its server log back.

    from pipeline.smoke import modelrun
    result = modelrun.run(lambda argv: box.exec(argv, capture=True), prefix="/opt/prefix",
                          model_path="/opt/model/tiny.gguf")
    print(result.tokens, result.tokens_per_s, result.backend)

`unit_check_script()` and `check_unit()` check the package's systemd unit with `systemd-analyze verify`
where the system has it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from pipeline.errors import ModelRunError, PackageError
from pipeline.formats import PackageLayout
from pipeline.records import record

ExecFn = Callable[[Sequence[str]], str]

MODEL = "tiny"
PROMPT = "Say something."
NUM_PREDICT = 16
MIN_TOKENS = 8
SEED = 42
PORT = 11439
MARK = "=====modelrun:"

# $1 prefix, $2 model path, $3 port, $4 seconds to wait for the server and for each command,
# $5 Modelfile text, $6 model name, $7 prompt.
SCRIPT = r"""
prefix=$1 model_path=$2 port=$3 limit=$4 modelfile=$5 name=$6 prompt=$7
ollama="$prefix/@BIN@"
work=$(mktemp -d 2>/dev/null) || { work=/tmp/modelrun.$$; mkdir -p "$work"; }
export OLLAMA_HOST="127.0.0.1:$port" OLLAMA_MODELS="$work/models" HOME="$work"
step=start pid=
: >"$work/server.log"; : >"$work/create.log"; : >"$work/run.out"; : >"$work/run.err"

limited() {
  if command -v timeout >/dev/null 2>&1; then timeout "$limit" "$@"; else "$@"; fi
}
section() { echo "MARK$1====="; }
finish() {
  status=$1 message=$2
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
    kill -9 "$pid" 2>/dev/null
  fi
  section status; echo "$status"
  section step; echo "$step"
  section message; echo "$message"
  for f in create.log run.out run.err server.log; do section "$f"; cat "$work/$f"; echo; done
  section end
  rm -rf "$work"
  exit 0
}

[ -x "$ollama" ] || finish fail "$ollama is missing or not executable"
[ -r "$model_path" ] || finish fail "the model $model_path is missing"

step=serve
"$ollama" serve >"$work/server.log" 2>&1 </dev/null &
pid=$!
step=ready
i=0
until "$ollama" list >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null ||
    { wait "$pid"; code=$?; pid=; finish fail "ollama serve exited with code $code"; }
  [ "$i" -ge "$((limit * 2))" ] && finish fail "ollama serve did not answer on $OLLAMA_HOST within ${limit}s"
  sleep 0.5; i=$((i + 1))
done

step=create
printf '%s\n' "$modelfile" | sed "s|@MODEL@|$model_path|" >"$work/Modelfile"
limited "$ollama" create "$name" -f "$work/Modelfile" >"$work/create.log" 2>&1 </dev/null \
  || finish fail "ollama create exited with code $?"

step=run
limited "$ollama" run "$name" "$prompt" --verbose >"$work/run.out" 2>"$work/run.err" </dev/null \
  || finish fail "ollama run exited with code $?"
step=done
finish ok ""
""".replace("@BIN@", PackageLayout.BIN).replace("MARK", MARK)

MODELFILE = f"""\
FROM @MODEL@
TEMPLATE {{{{ .Prompt }}}}
PARAMETER temperature 0
PARAMETER seed {SEED}
PARAMETER num_predict {NUM_PREDICT}
PARAMETER num_ctx 512"""

_EVAL_COUNT = re.compile(r"(?<!prompt )eval count:\s+(\d+) token")
_EVAL_RATE = re.compile(r"(?<!prompt )eval rate:\s+([0-9.]+) tokens/s")
_LOADED = re.compile(r"load_backend: loaded (\S+) backend from (\S+)")
_COMPUTE = re.compile(r"inference compute\b.*?\blibrary=(\S+)")
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
# What gin writes at each start when the server runs in its debug mode: a binary linked without
# upstream's release flag (-X=github.com/ollama/ollama/server.mode=release, [[upstream.release_build]]).
GIN_DEBUG = "[GIN-debug]"


@record(positional=True)
class Backend:
    """A ggml backend the server or its runner loaded: its name (CPU, CUDA, ROCm) and library file."""

    name: str
    library: str


@record(positional=True)
class ModelRun:
    """What one model run measured."""

    tokens: int                 # eval count: tokens generated
    tokens_per_s: float         # eval rate, as `ollama run --verbose` prints it
    backend: str                # the backend that ran the model: a GPU one where one loaded, else CPU
    backends: tuple[Backend, ...]  # every backend loaded, in order, without repeats
    compute: tuple[str, ...]    # libraries of the server's "inference compute" lines (cpu, cuda, rocm)
    offloaded: tuple[int, int] | None  # layers on the GPU / layers, where the server says
    response: str               # the generated text (noise from a random model)
    server_log: str

    def summary(self) -> str:
        where = f", {self.offloaded[0]}/{self.offloaded[1]} layers on the GPU" if self.offloaded else ""
        return f"{self.tokens} tokens at {self.tokens_per_s:.1f} tokens/s on {self.backend}{where}"


def script_argv(prefix: str, model_path: str, *, port: int = PORT, limit_s: int = 300,
                name: str = MODEL, prompt: str = PROMPT, modelfile: str = MODELFILE) -> list[str]:
    """The command that runs the model: `sh -c SCRIPT modelrun ARGS...`; values travel as arguments,
    never spliced into the script."""
    return ["sh", "-c", SCRIPT, "modelrun", prefix, model_path, str(port), str(limit_s), modelfile, name,
            prompt]


def run(exec_fn: ExecFn, prefix: str = "/opt/prefix", model_path: str = "/opt/model/tiny.gguf", *,
        port: int = PORT, limit_s: int = 300, min_tokens: int = MIN_TOKENS) -> ModelRun:
    """Serve, import and generate with the ollama installed at prefix, through exec_fn (argv -> output
    text, raising on a non-zero exit). Raise ModelRunError, with the server log's tail, on failure."""
    try:
        output = exec_fn(script_argv(prefix, model_path, port=port, limit_s=limit_s))
    except PackageError:
        raise
    except Exception as exc:  # the exec function's own failure: the script itself always exits 0
        raise ModelRunError("exec", f"the model run script could not run: {exc}") from exc
    return parse(output, min_tokens=min_tokens)


def parse(output: str, *, min_tokens: int = MIN_TOKENS) -> ModelRun:
    """The script's report -> ModelRun, or ModelRunError."""
    sections = split_sections(output)
    if "status" not in sections or "end" not in sections:
        raise ModelRunError("report", "the model run script printed no complete report",
                            output=output)
    server_log = sections.get("server.log", "")
    status, step = sections["status"].strip(), sections.get("step", "?").strip()
    if status != "ok":
        failed = {"create": "create.log", "run": "run.err"}.get(step)
        detail = sections.get(failed, "") if failed else ""
        if step == "run":
            detail = (sections.get("run.out", "") + "\n" + detail).strip()
        raise ModelRunError(step, sections.get("message", "").strip() or "failed", server_log, detail)

    if GIN_DEBUG in server_log:
        line = next(x for x in server_log.splitlines() if GIN_DEBUG in x)
        raise ModelRunError("serve", f"the server runs in gin's debug mode ({line.strip()}): bin/ollama was "
                            "not linked as upstream's release is (-X=github.com/ollama/ollama/server.mode="
                            "release; [[upstream.release_build]] in targets.toml)", server_log)
    err = sections.get("run.err", "")
    count, rate = _EVAL_COUNT.search(err), _EVAL_RATE.search(err)
    if not count or not rate:
        raise ModelRunError("run", "`ollama run --verbose` printed no eval count and eval rate",
                            server_log, err)
    tokens = int(count[1])
    if tokens < min_tokens:
        raise ModelRunError("run", f"generated {tokens} tokens, fewer than {min_tokens}", server_log, err)
    backends = tuple(dict.fromkeys(Backend(m[1], m[2].rsplit("/", 1)[-1])
                                   for m in _LOADED.finditer(server_log)))
    compute = tuple(dict.fromkeys(m[1].strip('"') for m in _COMPUTE.finditer(server_log)))
    offloaded = [(int(m[1]), int(m[2])) for m in _OFFLOADED.finditer(server_log)]
    return ModelRun(tokens=tokens, tokens_per_s=float(rate[1]), backend=_backend(backends, compute),
                    backends=backends, compute=compute, offloaded=offloaded[-1] if offloaded else None,
                    response=sections.get("run.out", "").strip(), server_log=server_log)


def _backend(backends: tuple[Backend, ...], compute: tuple[str, ...]) -> str:
    gpu = [b for b in backends if b.name.upper() != "CPU"]
    cpu = [b for b in backends if b.name.upper() == "CPU"]
    if compute and all(c.strip('"').lower() == "cpu" for c in compute) and cpu:
        # The server computes on the CPU: a GPU backend in the log is GPU discovery's (at trace level
        # the discovery runner's output reaches the log), which found no device.
        return f"{cpu[-1].name} ({cpu[-1].library})"
    if gpu:
        return f"{gpu[-1].name} ({gpu[-1].library})"
    if backends:
        return f"{backends[-1].name} ({backends[-1].library})"
    gpu_compute = [c for c in compute if c.lower() != "cpu"]
    return gpu_compute[-1] if gpu_compute else (compute[-1] if compute else "unknown")


def split_sections(output: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    name, lines = None, []
    for line in output.splitlines():
        if line.startswith(MARK) and line.endswith("====="):
            if name is not None:
                sections[name] = "\n".join(lines)
            name, lines = line[len(MARK):-5], []
        elif name is not None:
            lines.append(line)
    if name is not None:
        sections[name] = "\n".join(lines)
    return sections


# ---- the systemd unit -------------------------------------------------------------------------------

UNIT_SCRIPT = r"""
pkg=$1 prefix=$2
if ! command -v systemd-analyze >/dev/null 2>&1; then echo "skipped: no systemd-analyze"; exit 0; fi
work=$(mktemp -d)
sh "$pkg/@SHARE@/install.sh" --unit "$prefix" >"$work/ollama.service" ||
  { echo "failed: install.sh --unit"; exit 0; }
if out=$(systemd-analyze verify "$work/ollama.service" 2>&1); then echo "ok"; else echo "failed:"; fi
printf '%s\n' "$out"
rm -rf "$work"
""".replace("@SHARE@", PackageLayout.SHARE)


@record(positional=True)
class UnitCheck:
    checked: bool                 # False where the system has no systemd-analyze
    problems: tuple[str, ...]     # systemd-analyze's complaints; empty when the unit passes
    unit_output: str = ""


def unit_check_argv(package_root: str, prefix: str) -> list[str]:
    """`sh -c` command: render the unit as install.sh would for prefix and `systemd-analyze verify` it."""
    return ["sh", "-c", UNIT_SCRIPT, "unitcheck", package_root, prefix]


def check_unit(exec_fn: ExecFn, package_root: str, prefix: str = "/opt/prefix") -> UnitCheck:
    """Check the package's unit where systemd-analyze exists (needs bin/ollama installed at prefix);
    skip, with checked=False, where it does not."""
    out = exec_fn(unit_check_argv(package_root, prefix))
    first, _, rest = out.strip().partition("\n")
    if first.startswith("skipped"):
        return UnitCheck(False, ())
    # Lines about the unit itself; systemd-analyze also talks about units of the host it cannot see.
    problems = tuple(line for line in rest.splitlines() if line.strip() and "ollama.service" in line)
    if first.startswith("failed") and not problems:
        problems = tuple(line for line in rest.splitlines() if line.strip()) or (first,)
    return UnitCheck(True, problems, rest)

