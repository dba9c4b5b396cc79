#!/usr/bin/env bash
# Install MinkowskiEngine 0.5.4 (the last release, sdist only) into the project's environment.
#
#   tools/install_minkowski.sh [--venv DIR] [--cpu_only]        (or: make minkowski)
#
# The wheel is built once per (Python, torch, CUDA, this script) and cached, so a second install
# takes seconds. Environment:
#   VENV                   target virtualenv (default .venv); its torch is the one built against
#   POINTSEG_CACHE         cache root (default ${XDG_CACHE_HOME:-~/.cache}/pointseg); wheels go
#                          to $POINTSEG_CACHE/wheels/<key>/, with the build log beside them
#   MINKOWSKI_CPU_ONLY=1   CPU build even where CUDA could be built (same as --cpu_only)
#   MAX_JOBS               parallel compile jobs (default: all cores)
#
# CUDA is built when `nvcc` is on PATH and the environment's torch is a CUDA build; otherwise the
# CPU build, which links a system BLAS (Debian: libopenblas-dev, installed here with apt-get
# when missing and we are root).
#
# What the 0.5.4 sdist needs on current toolchains, and how it is given here:
# * Its setup.py finds a BLAS through numpy.distutils (gone with numpy 1.24 / setuptools 60 /
#   Python 3.12) unless one is named: we pass --blas=openblas, so the build needs no numpy and
#   none of those pins. It reads its options from sys.argv; pip hands them over as
#   --config-settings --global-option.
# * Its setup.py runs `pip uninstall MinkowskiEngine -y` with whatever pip is first on PATH: the
#   build runs with the throw-away build environment first on PATH.
# * Five modules do `from collections import Sequence`, removed in Python 3.10: the built wheel is
#   unpacked, those imports are pointed at collections.abc, and it is repacked (`wheel pack`
#   rewrites RECORD). No C++ change is needed for the CPU build with torch 2.13 and GCC 12; the
#   CUDA route (--force_cuda) is untested.
# * The extension is compiled against the target environment's own torch (ABI must match):
#   the build environment sees it through a .pth file instead of installing another copy.
set -euo pipefail

ME_VERSION=0.5.4
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SCRIPT="$ROOT/tools/install_minkowski.sh"
VENV="${VENV:-.venv}"
CPU_ONLY="${MINKOWSKI_CPU_ONLY:-0}"

while [ $# -gt 0 ]; do
    case "$1" in
        --cpu_only) CPU_ONLY=1 ;;
        --venv) VENV="$2"; shift ;;
        -h|--help) sed -n '2,16p' "$SCRIPT"; exit 0 ;;
        *) echo "install_minkowski: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

die() { echo "install_minkowski: $*" >&2; exit 1; }

PY="$VENV/bin/python"
[ -x "$PY" ] || die "no Python at $PY; create the environment first (make install-dev) or pass --venv DIR"
read -r PY_TAG TORCH_VERSION TORCH_CUDA TARGET_SITE < <("$PY" - <<'EOF'
import sys, sysconfig
try:
    import torch
except ImportError:
    sys.exit("install_minkowski: torch does not import in the target environment; install it first")
print(f"cp{sys.version_info[0]}{sys.version_info[1]}", torch.__version__, torch.version.cuda or "none",
      sysconfig.get_paths()["platlib"])
EOF
) || die "could not query the target environment $VENV"

VARIANT=cpu
if [ "$CPU_ONLY" != 1 ] && [ "$TORCH_CUDA" != none ] && command -v nvcc >/dev/null; then
    VARIANT="cu${TORCH_CUDA//./}"
fi
SCRIPT_HASH="$(sha256sum "$SCRIPT" | cut -c1-10)"
KEY="MinkowskiEngine-$ME_VERSION-$PY_TAG-torch${TORCH_VERSION//+/_}-$VARIANT-$SCRIPT_HASH"
CACHE="${POINTSEG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pointseg}/wheels/$KEY"

install_wheel() {
    # --no-deps: ME's metadata asks for torch and numpy, which the environment already has;
    # pip must not swap its torch build for another.
    "$PY" -m pip install --quiet --no-deps --force-reinstall "$1"
    "$PY" -c "import MinkowskiEngine as ME; print('MinkowskiEngine', ME.__version__, 'imports from', ME.__file__)"
}

shopt -s nullglob
cached=("$CACHE"/*.whl)
if [ ${#cached[@]} -eq 1 ]; then
    echo "install_minkowski: cached wheel $KEY"
    install_wheel "${cached[0]}"
    exit 0
fi

# ---- build ---------------------------------------------------------------------------------
blas_links() {
    local t; t="$(mktemp -d)"
    printf '#include <cblas.h>\nint main(void){float a=1,b=1,c=0;cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,1,1,1,1,&a,1,&b,1,0,&c,1);return c!=1;}\n' >"$t/t.c"
    "${CC:-cc}" "$t/t.c" -o "$t/t" -lopenblas >/dev/null 2>&1 && "$t/t"
    local ok=$?; rm -rf "$t"; return $ok
}

ensure_blas() {
    blas_links && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "install_minkowski: installing libopenblas-dev (apt-get)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev >/dev/null
        blas_links && return 0
    fi
    die "OpenBLAS (cblas.h, -lopenblas) not usable: install it first (Debian/Ubuntu: apt-get install libopenblas-dev)"
}

ensure_blas  # the CUDA build links it too (ME's CPU kernels stay in)
if [ "$VARIANT" = cpu ]; then
    ME_OPTIONS=(--cpu_only --blas=openblas)
else
    ME_OPTIONS=(--force_cuda --blas=openblas)
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/minkowski-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
LOG="$WORK/build.log"
BASE_PY="$("$PY" -c 'import sys; print(sys._base_executable)')"

build() {
    set -euo pipefail
    local benv="$WORK/env"
    "$BASE_PY" -m venv "$benv"
    # the versions this script was tested with (setuptools' build_meta passes --global-option
    # config settings to setup.py's argv; wheel provides unpack/pack)
    "$benv/bin/python" -m pip install --quiet pip==26.3 setuptools==84.2.1 wheel==0.48.0 ninja==1.13.2
    # torch (and what it needs) come from the target environment, after the build tools.
    local bsite
    bsite="$("$benv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
    echo "$TARGET_SITE" >"$bsite/_target_env.pth"
    # --no-cache-dir: pip's own wheel cache is keyed by the sdist alone, not by torch or options.
    local global=() opt
    for opt in "${ME_OPTIONS[@]}"; do global+=("--config-settings=--global-option=$opt"); done
    # Python's own CFLAGS (-O3 -DNDEBUG -fwrapv ... -g) with -g0 last: no debug info, ~25 % less
    # compile time (measured on convolution_cpu.cpp) and a far smaller extension. setuptools
    # replaces, not extends, its CFLAGS with the environment's, hence the full line.
    local cflags
    cflags="$("$benv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS") or "")') ${CFLAGS:-} -g0"
    PATH="$benv/bin:$PATH" MAX_JOBS="${MAX_JOBS:-$(nproc)}" CFLAGS="$cflags" \
        "$benv/bin/python" -m pip wheel -v --no-cache-dir \
        --no-build-isolation --use-pep517 --no-deps --no-binary :all: "${global[@]}" \
        -w "$WORK/dist" "MinkowskiEngine==$ME_VERSION"
    local built=("$WORK"/dist/*.whl)
    "$benv/bin/python" -m wheel unpack -d "$WORK/unpacked" "${built[0]}"
    local tree=("$WORK"/unpacked/*)
    { grep -rl --include='*.py' 'from collections import Sequence' "${tree[0]}" || true; } | while read -r f; do
        sed -i -E 's/^from collections import Sequence, namedtuple$/from collections import namedtuple\nfrom collections.abc import Sequence/; s/^from collections import Sequence$/from collections.abc import Sequence/' "$f"
        echo "patched $f"
    done
    if grep -rq --include='*.py' 'from collections import Sequence' "${tree[0]}"; then
        echo "a 'from collections import Sequence' was left unpatched"
        return 1
    fi
    mkdir -p "$WORK/patched"
    "$benv/bin/python" -m wheel pack -d "$WORK/patched" "${tree[0]}"
}

START=$(date +%s)
echo "install_minkowski: building $KEY (about 4 min on 2 idle cores); log: $LOG"
set +e
( build ) >"$LOG" 2>&1
status=$?
set -e
if [ $status -ne 0 ]; then
    echo "install_minkowski: build failed; last lines of the build log:" >&2
    tail -n 40 "$LOG" >&2
    mkdir -p "$(dirname "$CACHE")" && cp "$LOG" "$CACHE.failed.log" && echo "full log: $CACHE.failed.log" >&2
    exit 1
fi

wheel=("$WORK"/patched/*.whl)
rm -rf "$CACHE.tmp" && mkdir -p "$CACHE.tmp"
cp "${wheel[0]}" "$LOG" "$CACHE.tmp/"
rm -rf "$CACHE" && mv "$CACHE.tmp" "$CACHE"   # the cache entry appears whole or not at all
echo "install_minkowski: built in $(( $(date +%s) - START )) s; cached in $CACHE"
install_wheel "$CACHE/$(basename "${wheel[0]}")"
