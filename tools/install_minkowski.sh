#!/usr/bin/env bash
# Install MinkowskiEngine 0.5.4 (the last release, sdist only) into the project's environment.
#
#   tools/install_minkowski.sh [--venv DIR] [--cpu_only]        (or: make minkowski)
#
# The wheel is built once per (Python, torch, variant, the script's code) and cached, so a second
# install takes seconds. Environment:
#   VENV                   target virtualenv (default .venv); its torch is the one built against
#   POINTSEG_CACHE         cache root (default ${XDG_CACHE_HOME:-~/.cache}/pointseg); wheels go
#                          to $POINTSEG_CACHE/wheels/<key>/, with the build log beside them
#   MINKOWSKI_CPU_ONLY=1   CPU build even where CUDA could be built (same as --cpu_only)
#   TORCH_CUDA_ARCH_LIST   GPU architectures of the CUDA build, e.g. "8.0;9.0" (A100, H100/H200);
#                          needed where no GPU is visible (a cluster's build node); default: the
#                          visible GPUs' own
#   CUDA_HOME              the CUDA toolkit (default: the one whose nvcc is first on PATH)
#   MAX_JOBS               parallel compile jobs (default: all cores; each nvcc job takes GBs)
#
# Variant: CUDA when the environment's torch is a CUDA build, `nvcc` is on PATH and an
# architecture is known (TORCH_CUDA_ARCH_LIST, or a visible GPU); otherwise the CPU build, and
# the script says why. Both link a system BLAS (Debian: libopenblas-dev, installed here with
# apt-get when missing and we are root). The cache key names the variant: cpu, or the CUDA
# toolkit's version and the architectures (cu13.0-sm90).
#
# What the 0.5.4 sdist needs on current toolchains, and how it is given here:
# * Its setup.py finds a BLAS through numpy.distutils (gone with numpy 1.24 / setuptools 60 /
#   Python 3.12) unless one is named: we pass --blas=openblas, so the build needs no numpy and
#   none of those pins. It reads its options from sys.argv; pip hands them over as
#   --config-settings --global-option.
# * Its setup.py runs `pip uninstall MinkowskiEngine -y` with whatever pip is first on PATH: the
#   build runs with the throw-away build environment first on PATH.
# * The sources are patched before the build, so pip fetches and unpacks the sdist first (a
#   dry-run install, which prepares its metadata with the same options, keeps the unpacked tree).
# * Five modules do `from collections import Sequence`, removed in Python 3.10: pointed at
#   collections.abc.
# * CUDA >= 12 (each fix checked to apply, see patch_cuda_sources): thrust's algorithm headers
#   are no longer included through others; the bundled NVTX wrapper clashes with the one CUB now
#   includes. CUDA 13 (CCCL 3): thrust::unary_function is gone; cudaMemPrefetchAsync takes a
#   cudaMemLocation; thrust, CUB and libcu++ live in include/cccl/, where nvcc looks and the host
#   compiler does not (cccl_headers adds it to CPATH). torch 2.14: ATen/cuda/CUDAUtils.h needs
#   at::Tensor declared first (spmm includes ATen/core/Tensor.h before it). The CPU build needs
#   no C++ change with torch 2.13 / 2.14 and GCC 12.
# * The CUDA toolkit need not hold cuBLAS / cuSPARSE (pip-installed toolkits often don't): their
#   headers and libcusparse then come from the nvidia-* packages the CUDA torch wheel installed.
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
        -h|--help) sed -n '2,22p' "$SCRIPT"; exit 0 ;;
        *) echo "install_minkowski: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

die() { echo "install_minkowski: $*" >&2; exit 1; }
say() { echo "install_minkowski: $*"; }

PY="$VENV/bin/python"
[ -x "$PY" ] || die "no Python at $PY; create the environment first (make install-dev) or pass --venv DIR"
read -r PY_TAG TORCH_VERSION TORCH_CUDA TARGET_SITE VISIBLE_ARCHS < <("$PY" - <<'EOF'
import sys, sysconfig
try:
    import torch
except ImportError:
    sys.exit("install_minkowski: torch does not import in the target environment; install it first")
gpus = torch.cuda.device_count() if torch.version.cuda else 0
archs = ";".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(gpus)})) or "none"
print(f"cp{sys.version_info[0]}{sys.version_info[1]}", torch.__version__, torch.version.cuda or "none",
      sysconfig.get_paths()["platlib"], archs)
EOF
) || die "could not query the target environment $VENV"

# ---- variant --------------------------------------------------------------------------------
VARIANT=cpu
if [ "$CPU_ONLY" = 1 ]; then
    say "CPU build (MINKOWSKI_CPU_ONLY / --cpu_only)"
elif [ "$TORCH_CUDA" = none ]; then
    say "CPU build: the environment's torch $TORCH_VERSION is a CPU build"
elif ! command -v nvcc >/dev/null && [ ! -x "${CUDA_HOME:-/nonexistent}/bin/nvcc" ]; then
    say "CPU build: torch $TORCH_VERSION is a CUDA build but no nvcc is on PATH (or in CUDA_HOME)"
elif [ -z "${TORCH_CUDA_ARCH_LIST:-}" ] && [ "$VISIBLE_ARCHS" = none ]; then
    say "CPU build: no GPU is visible and TORCH_CUDA_ARCH_LIST is not set" \
        "(set it, e.g. TORCH_CUDA_ARCH_LIST=\"8.0;9.0\", to build the CUDA variant without a GPU)"
else
    # torch's extension builder runs $CUDA_HOME/bin/nvcc; by default the toolkit of the first nvcc
    # on PATH, located through nvcc itself (PATH may hold a wrapper script, not the toolkit's).
    if [ -z "${CUDA_HOME:-}" ]; then
        here="$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ _HERE_=//p' | head -n 1)"
        [ -n "$here" ] || die "cannot locate the CUDA toolkit of $(command -v nvcc); set CUDA_HOME"
        CUDA_HOME="$(cd "$here/.." && pwd)"
    fi
    export CUDA_HOME
    NVCC_VERSION="$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')"
    [ "${NVCC_VERSION%%.*}" = "${TORCH_CUDA%%.*}" ] \
        || die "nvcc $NVCC_VERSION ($CUDA_HOME) and torch's CUDA $TORCH_CUDA differ in major version; use a matching toolkit (CUDA_HOME) or MINKOWSKI_CPU_ONLY=1"
    export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$VISIBLE_ARCHS}"
    # "8.0;9.0+PTX" -> sm80-sm90ptx: a cache key per architecture set
    ARCH_KEY="$(echo "$TORCH_CUDA_ARCH_LIST" | tr ' ,;' '\n\n\n' | sed '/^$/d; s/\.//; s/+PTX$/ptx/I; s/^/sm/' | tr 'A-Z' 'a-z' | sort -u | paste -sd- -)"
    VARIANT="cu$NVCC_VERSION-$ARCH_KEY"
    say "CUDA build with nvcc $NVCC_VERSION ($CUDA_HOME) for TORCH_CUDA_ARCH_LIST=\"$TORCH_CUDA_ARCH_LIST\""
fi
# The key hashes the script's code, not its comments: a comment edit must not cost a rebuild.
SCRIPT_HASH="$(grep -v '^[[:space:]]*#' "$SCRIPT" | sha256sum | cut -c1-10)"
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
    say "cached wheel $KEY"
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
        say "installing libopenblas-dev (apt-get)"
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

# Replace a pattern (perl, whole file) and fail unless the file changed: a patch that silently
# stops applying would bring the compile error back.
patch_file() {
    local file="$1" expr="$2" before
    before="$(sha256sum "$file")"
    perl -0pi -e "$expr" "$file"
    [ "$(sha256sum "$file")" != "$before" ] || { echo "patch did not apply to $file: $expr"; return 1; }
    echo "patched $file"
}

patch_python_sources() {
    local f
    for f in $(grep -rl --include='*.py' 'from collections import Sequence' "$1/MinkowskiEngine"); do
        patch_file "$f" 's/^from collections import Sequence, namedtuple$/from collections import namedtuple\nfrom collections.abc import Sequence/m; s/^from collections import Sequence$/from collections.abc import Sequence/m'
    done
    if grep -rq --include='*.py' 'from collections import Sequence' "$1/MinkowskiEngine"; then
        echo "a 'from collections import Sequence' was left unpatched"
        return 1
    fi
}

patch_cuda_sources() {
    local src="$1/src"
    # thrust no longer includes its algorithm headers through others (CUDA >= 12; NVIDIA/
    # MinkowskiEngine#543, #601, #638, PR #607): the .cu files call thrust::sort_by_key, remove_if,
    # unique, reduce_by_key, sequence, count_if, ... without including them. gpu.cuh is included
    # by every CUDA source (through common.hpp); only nvcc sees the block.
    patch_file "$src/gpu.cuh" 's|#include "utils.hpp"\n|#include "utils.hpp"\n\n#ifdef __CUDACC__\n#include <thrust/count.h>\n#include <thrust/execution_policy.h>\n#include <thrust/for_each.h>\n#include <thrust/reduce.h>\n#include <thrust/remove.h>\n#include <thrust/scan.h>\n#include <thrust/sequence.h>\n#include <thrust/sort.h>\n#include <thrust/transform.h>\n#include <thrust/unique.h>\n#endif\n|'
    # The bundled copy of cudf's NVTX C++ wrapper (an older nvtx3.hpp) clashes with the toolkit's
    # nvtx3/nvtx3.hpp that CUB includes since CUDA 12.x ("nvtx3::domain is ambiguous"; the NVTX
    # header moves of #614, #621, PR #626). Its one use is a profiler range around the hash
    # map's constructor: dropped, no effect on results.
    patch_file "$src/3rdparty/concurrent_unordered_map.cuh" 's|#include <cudf/detail/nvtx/ranges.hpp>\n||; s|\n[ \t]*CUDF_FUNC_RANGE\(\);||'
    # The same header calls thrust::count_if(thrust::device, ...) but includes only thrust/count.h,
    # which no longer brings in the execution policies (CCCL 3); coordinate_map_gpu.cu includes it
    # before gpu.cuh's block.
    patch_file "$src/3rdparty/concurrent_unordered_map.cuh" 's|#include <thrust/count.h>\n|#include <thrust/count.h>\n#include <thrust/execution_policy.h>\n|'
    # CUDA 13 removed cudaMemPrefetchAsync(ptr, bytes, device, stream): the location is a
    # cudaMemLocation and flags come before the stream. The hash map's three calls go through a
    # wrapper that keeps the old form on earlier toolkits.
    patch_file "$src/3rdparty/concurrent_unordered_map.cuh" 's/cudaMemPrefetchAsync\(/prefetch_to_device(/g; s|(#include <thrust/pair.h>\n)|$1\ninline cudaError_t prefetch_to_device(const void* ptr, size_t bytes, int device, cudaStream_t stream)\n{\n#if CUDART_VERSION >= 13000\n  cudaMemLocation location{};\n  location.type = cudaMemLocationTypeDevice;\n  location.id   = device;\n  return cudaMemPrefetchAsync(ptr, bytes, location, 0, stream);\n#else\n  return cudaMemPrefetchAsync(ptr, bytes, device, stream);\n#endif\n}\n|'
    # Since CCCL 3, thrust::pair is cuda::std::pair, so the map's type has cuda::std as an
    # associated namespace; libstdc++'s shared_ptr-from-unique_ptr constructor calls __to_address
    # unqualified and finds libcu++'s as well ("more than one instance of std::__to_address"). The
    # map is handed to its shared_ptr as a pointer and a deleter instead (the same ownership).
    patch_file "$src/coordinate_map_gpu.cuh" 's|m_map = (map_type::create\([^;]*\));|{\n        auto created = $1;\n        auto deleter = created.get_deleter();\n        m_map = std::shared_ptr<map_type>(created.release(), std::move(deleter));\n      }|'
    # ATen/cuda/CUDAUtils.h of recent torch (2.14 here) uses at::Tensor without including its definition;
    # spmm includes it before any header that does ("incomplete type at::Tensor").
    for f in spmm.cu spmm.cuh; do
        patch_file "$src/$f" 's|#include <ATen/cuda/CUDAUtils.h>\n|#include <ATen/core/Tensor.h>\n#include <ATen/cuda/CUDAUtils.h>\n|'
    done
    # thrust::unary_function (only typedefs, deprecated since CUDA 12) is removed in CUDA 13's
    # CCCL 3: find_coordinate no longer derives from it.
    patch_file "$src/coordinate_map_functors.cuh" 's|\s*:\s*public thrust::unary_function<uint32_t,\s*thrust::pair<uint32_t, uint32_t>>\s*\{| {|'
}

# CUDA 13 moved thrust, CUB and libcu++ to include/cccl/: nvcc looks there, the host compiler
# does not, and ME's .cpp sources include thrust/host_vector.h (through utils.hpp).
cccl_headers() {
    if [ -d "$CUDA_HOME/include/cccl/thrust" ]; then
        export CPATH="$CUDA_HOME/include/cccl${CPATH:+:$CPATH}"
        echo "thrust for the host compiler from $CUDA_HOME/include/cccl"
    fi
}

# cuBLAS / cuSPARSE from the torch wheel's nvidia-* packages when the toolkit lacks them.
cuda_math_libraries() {
    local inc lib
    if [ ! -f "$CUDA_HOME/include/cusparse.h" ] || [ ! -f "$CUDA_HOME/include/cublas_v2.h" ]; then
        for inc in "$TARGET_SITE"/nvidia/*/include; do
            if [ -f "$inc/cusparse.h" ] || [ -f "$inc/cublas_v2.h" ]; then
                export CPATH="$inc${CPATH:+:$CPATH}"
                echo "headers from $inc"
            fi
        done
    fi
    if [ ! -e "$CUDA_HOME/lib64/libcusparse.so" ] && [ ! -e "$CUDA_HOME/lib/libcusparse.so" ]; then
        lib="$(ls "$TARGET_SITE"/nvidia/*/lib/libcusparse.so.* 2>/dev/null | head -n 1)"
        [ -n "$lib" ] || { echo "no libcusparse in $CUDA_HOME nor in $TARGET_SITE/nvidia"; return 1; }
        mkdir -p "$WORK/cudalib" && ln -s "$lib" "$WORK/cudalib/libcusparse.so"
        # at run time torch has loaded the same library (by its soname) before MinkowskiEngine
        export LDFLAGS="-L$WORK/cudalib${LDFLAGS:+ $LDFLAGS}"
        echo "linking $lib"
    fi
}

build() {
    set -euo pipefail
    local benv="$WORK/env"
    "$BASE_PY" -m venv "$benv"
    # the versions this script was tested with (setuptools' build_meta passes --global-option
    # config settings to setup.py's argv)
    "$benv/bin/python" -m pip install --quiet pip==26.3 setuptools==84.2.1 wheel==0.48.0 ninja==1.13.2
    # torch (and what it needs) come from the target environment, after the build tools.
    local bsite
    bsite="$("$benv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
    echo "$TARGET_SITE" >"$bsite/_target_env.pth"
    local global=() opt
    for opt in "${ME_OPTIONS[@]}"; do global+=("--config-settings=--global-option=$opt"); done
    export PATH="$benv/bin:$PATH"
    # The sdist, unpacked: a dry-run install fetches it and prepares its metadata (which runs
    # setup.py, hence the options); --no-clean keeps pip's unpacked tree.
    mkdir -p "$WORK/fetch"
    TMPDIR="$WORK/fetch" "$benv/bin/python" -m pip install --dry-run --no-clean --ignore-installed --no-deps \
        --no-build-isolation --use-pep517 --no-binary :all: --no-cache-dir "${global[@]}" "MinkowskiEngine==$ME_VERSION"
    local trees=("$WORK"/fetch/pip-install-*/minkowskiengine_*/)
    [ ${#trees[@]} -eq 1 ] && [ -f "${trees[0]}/setup.py" ] || { echo "pip left no unpacked sdist in $WORK/fetch"; return 1; }
    mv "${trees[0]}" "$WORK/src"
    patch_python_sources "$WORK/src"
    if [ "$VARIANT" != cpu ]; then
        patch_cuda_sources "$WORK/src"
        cccl_headers
        cuda_math_libraries
    fi
    # Python's own CFLAGS (-O3 -DNDEBUG -fwrapv ... -g) with -g0 last: no debug info, ~25 % less
    # compile time (measured on convolution_cpu.cpp) and a far smaller extension. setuptools
    # replaces, not extends, its CFLAGS with the environment's, hence the full line.
    local cflags
    cflags="$("$benv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS") or "")') ${CFLAGS:-} -g0"
    # --no-cache-dir: pip's own wheel cache is keyed by the sdist alone, not by torch or options.
    MAX_JOBS="${MAX_JOBS:-$(nproc)}" CFLAGS="$cflags" \
        "$benv/bin/python" -m pip wheel -v --no-cache-dir \
        --no-build-isolation --use-pep517 --no-deps "${global[@]}" \
        -w "$WORK/dist" "$WORK/src"
}

START=$(date +%s)
if [ "$VARIANT" = cpu ]; then
    say "building $KEY (about 4 min on 2 idle cores); log: $LOG"
else
    say "building $KEY (the CUDA sources take far longer than the CPU ones); log: $LOG"
fi
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

wheel=("$WORK"/dist/*.whl)
rm -rf "$CACHE.tmp" && mkdir -p "$CACHE.tmp"
cp "${wheel[0]}" "$LOG" "$CACHE.tmp/"
rm -rf "$CACHE" && mv "$CACHE.tmp" "$CACHE"   # the cache entry appears whole or not at all
say "built in $(( $(date +%s) - START )) s; cached in $CACHE"
install_wheel "$CACHE/$(basename "${wheel[0]}")"
