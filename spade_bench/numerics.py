"""What decides a run's CPU and GPU numbers, and the pinned CPU mode that makes them host-independent.

Two halves, one module:

- `numerics_state(device, mode=..., amp=...)`: a flat {field: value} record of everything that
  changes the bits of a result on this host: CPU vendor and model, torch's CPU capability, the
  oneDNN and MKL versions, the ISA oneDNN actually runs, MKL's conditional-numerical-
  reproducibility mode, OpenBLAS's core and threads, torch's thread count, the environment
  variables that steer them ("env.<NAME>"), the deterministic flags, and on CUDA the device,
  its capability, the cuDNN version and the TF32/bf16 switches. env.json and every
  metrics.json carry it under "numerics"; `spade-bench compare` and the report diff its keys.
- the pin (`train.numerics=pinned`): oneDNN capped at AVX2, ATen's kernels at avx2, MKL on
  its AVX2 dispatch with conditional numerical reproducibility off (MKL_CBWR removed: any
  value of it changes MKL's results), numpy's OpenBLAS on its Haswell kernels with one thread,
  and one fixed torch thread count (train.threads) in every phase. Measured on one AVX-512
  machine (README, Reproducibility): with the pin a training gives the same weights whatever
  the outer environment says (ISA caps, ATen capability, MKL_CBWR, OMP_NUM_THREADS, one core
  or two).

  Why not MKL_CBWR=COMPATIBLE, the one mode Intel documents as giving the same results on
  Intel and AMD CPUs: it is MKL's SSE2 path without FMA, and measured here it makes results
  noisier, not only slower: two DDP ranks of batch 2 against one process of batch 4 (3 smoke
  steps, the rest of the pin the same) agree on 91% of G's and 86% of D's weights within 1e-6
  instead of 97% and 96%, and MKL's share of a step grows ~35%. With the CPU fast path MKL is
  left with little of a training step (G's 1x1 shortcut convolutions, spectral norm's
  matrix-vector products, the procedural noise). The cost: MKL_ENABLE_INSTRUCTIONS=AVX2 makes
  Intel CPUs with and without AVX-512 agree, but an Intel and an AMD CPU may still differ in
  that share (MKL picks its kernels by vendor; untested: no Intel host was at hand).

When each setting is read decides how the pin is applied. oneDNN's ISA, ATen's capability and
MKL's mode are read at their first use (first convolution, first dispatched op, first MKL
call); OpenBLAS's core and threads and OpenMP's thread count when the libraries load (`import
numpy`, `import torch`). So the CLI resolves the config first (config.py loads neither torch
nor numpy), exports the pinned environment (`export_pin`) and only then imports the heavy
modules; subprocesses inherit it. Code that runs a pinned config in a process that may have
used torch already (library use, tests) calls `ensure_pinned`, which exports the environment
too and then checks what is actually in force: a setting that was locked earlier is an error
naming the fix, never a silent unpinned run. tests/conftest.py pins the test process before
torch and numpy load.

This module imports neither torch nor numpy at import time: the CLI imports it before they
load (the functions that inspect them import them inside).
"""
from __future__ import annotations

import ctypes
import glob
import os
import platform
import re
import sys
import tempfile
import warnings
from typing import Any, MutableMapping, Optional

from spade_bench.errors import NumericsError

MODES = ("native", "pinned")

# The pinned CPU environment (threads come on top: OMP_NUM_THREADS / MKL_NUM_THREADS = N).
PINNED_ENV = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",       # oneDNN's jit kernels: AVX2 on any AVX2 host (AVX-512 ones differ)
    "ATEN_CPU_CAPABILITY": "avx2",      # ATen's vectorised kernels (softmax, reductions, ...)
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL's dispatch on Intel CPUs (AMD ones take one path anyway)
    "OPENBLAS_CORETYPE": "Haswell",     # numpy's OpenBLAS (FID, bootstrap): AVX2 + FMA kernels
    "OPENBLAS_NUM_THREADS": "1",
}
# Variables that would change the pinned results: a pinned environment does not pass them on
# (MKL_CBWR: any value, even AUTO, turns MKL's reproducibility mode on and changes its results).
UNPINNED_ENV = ("DNNL_MAX_CPU_ISA", "MKL_CBWR", "ONEDNN_DEFAULT_FPMATH_MODE")

# The environment variables recorded in numerics_state, as "env.<NAME>".
NUMERICS_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE", "ATEN_CPU_CAPABILITY",
                "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OPENBLAS_L2_SIZE", "NPY_DISABLE_CPU_FEATURES",
                "CUBLAS_WORKSPACE_CONFIG")

_CBWR_NAMES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE"}
_ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile",
              "avx_vnni")
_STATE: dict[str, Any] = {"checked": None, "onednn": None, "warned": False}


# ----------------------------------------------------------------------------- the pin (no torch)

def pinned_environment(threads: int, base: Optional[MutableMapping[str, str]] = None) -> dict[str, str]:
    """`base` (default os.environ) with the pin for `threads` torch threads: what a pinned
    subprocess is started with."""
    env = dict(os.environ if base is None else base)
    for name in UNPINNED_ENV:
        env.pop(name, None)
    env.update(PINNED_ENV)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if threads > 1:
        # OpenMP threads that spin while another process holds the core make a busy machine
        # 10x slower; sleeping ones change no bits (measured).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def export_pin(threads: int) -> None:
    """Put the pin for `threads` into this process's environment. In force for every setting
    not read yet in this process (before torch and numpy load: all of them), and for every
    subprocess started from now on."""
    reason = pin_unavailable()
    if reason:
        return
    pinned = pinned_environment(threads)
    for name in UNPINNED_ENV:
        os.environ.pop(name, None)
    os.environ.update({k: v for k, v in pinned.items() if os.environ.get(k) != v})


def cpu_info() -> dict[str, Optional[str]]:
    """Vendor, model name, family, model number and the SIMD flags that matter, from /proc/cpuinfo
    (None where it cannot be read)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("vendor_id", "model name", "cpu family", "model", "flags") and key not in info:
                    info[key] = value.strip()
                if len(info) == 5:
                    break
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    return {"vendor": info.get("vendor_id"), "model": info.get("model name") or platform.processor() or None,
            "family": info.get("cpu family"), "model_number": info.get("model"),
            "flags": " ".join(f for f in _ISA_FLAGS if f in flags) if "flags" in info else None}


def pin_unavailable() -> Optional[str]:
    """Why this host cannot run the pin (None when it can): it needs an x86-64 CPU with AVX2 and
    FMA (the Haswell OpenBLAS kernels would not even run without them)."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return f"the pin needs an x86-64 CPU with AVX2 and FMA; this is {machine or 'an unknown machine'}"
    flags = cpu_info()["flags"]
    if flags is None:
        return "the pin needs an x86-64 CPU with AVX2 and FMA; this CPU's flags cannot be read (/proc/cpuinfo)"
    missing = [f for f in ("avx2", "fma") if f not in flags.split()]
    if missing:
        return f"the pin needs an x86-64 CPU with AVX2 and FMA; this one lacks {' and '.join(missing).upper()}"
    return None


# ----------------------------------------------------------------------------- what is in force (torch)

def _torch_lib() -> Optional[ctypes.CDLL]:
    import torch  # function-local: this module must import without torch (the CLI pins first)

    try:
        return ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    except OSError:
        return None


def mkl_state() -> tuple[Optional[str], Optional[str]]:
    """(MKL version string, MKL's CNR mode in force: OFF, AUTO or COMPATIBLE), read through
    libtorch_cpu.so; (None, None) without MKL. Reading the mode fixes it for the process."""
    lib = _torch_lib()
    try:
        buf = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(buf, 256)
        code = lib.mkl_serv_cbwr_get(1)
        return buf.value.decode(errors="replace").strip(), _CBWR_NAMES.get(code, str(code))
    except (AttributeError, OSError):
        return None, None


def onednn_isa() -> tuple[Optional[str], Optional[str]]:
    """(ISA oneDNN runs, the implementation of a small convolution), from oneDNN's verbose lines
    for one 3x3 convolution (stdout is captured at the file-descriptor level and restored).
    Runs the convolution, so it fixes oneDNN's ISA for the process. Cached."""
    if _STATE["onednn"] is not None:
        return _STATE["onednn"]
    import torch  # function-local: see _torch_lib
    import torch.nn.functional as F

    if not torch.backends.mkldnn.is_available():
        return None, None
    sys.stdout.flush()
    fd, path = tempfile.mkstemp(prefix="onednn-verbose-")
    saved = os.dup(1)
    try:
        os.dup2(fd, 1)
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            F.conv2d(torch.ones(4, 32, 16, 16), torch.ones(32, 32, 3, 3), padding=1)
    finally:
        try:
            ctypes.CDLL(None).fflush(None)
        except (OSError, AttributeError):
            pass
        os.dup2(saved, 1)
        os.close(saved)
        os.close(fd)
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    os.unlink(path)
    isa = next((line.split("isa:", 1)[1].strip() for line in lines if ",isa:" in line), None)
    impl = next((line.split(",")[6] for line in lines
                 if ",exec," in line and ",convolution," in line and len(line.split(",")) > 6), None)
    _STATE["onednn"] = (isa, impl)
    return isa, impl


def _openblas(module_dir_glob: str, suffix: str) -> Optional[tuple[str, str, int]]:
    for path in glob.glob(module_dir_glob):
        try:
            lib = ctypes.CDLL(path)
            get_config = getattr(lib, f"scipy_openblas_get_config{suffix}")
            get_core = getattr(lib, f"scipy_openblas_get_corename{suffix}")
            get_threads = getattr(lib, f"scipy_openblas_get_num_threads{suffix}")
        except (OSError, AttributeError):
            continue
        get_config.restype = get_core.restype = ctypes.c_char_p
        return get_config().decode(), get_core().decode(), int(get_threads())
    return None


def openblas_state() -> Optional[tuple[str, str, int]]:
    """(build config, core in force, threads) of numpy's OpenBLAS, or None when numpy is not
    loaded or bundles another BLAS. Only read when numpy is already loaded (loading it reads
    OPENBLAS_CORETYPE)."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return None
    libs = os.path.join(os.path.dirname(numpy.__file__), os.pardir, "numpy.libs", "libscipy_openblas64_*.so*")
    return _openblas(libs, "64_")


def _set_openblas_threads(count: int) -> None:
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return
    libs = os.path.join(os.path.dirname(numpy.__file__), os.pardir, "numpy.libs", "libscipy_openblas64_*.so*")
    for path in glob.glob(libs):
        try:
            ctypes.CDLL(path).scipy_openblas_set_num_threads64_(count)
            return
        except (OSError, AttributeError):
            continue


def ensure_pinned(threads: int) -> str:
    """Make sure this process runs the pin; returns the mode in force ("pinned", or "native" on
    a host that cannot pin, with one warning).

    Exports the pinned environment (for what is not read yet, and for subprocesses), then reads
    what is in force: ATen's capability, oneDNN's ISA, MKL's CNR mode and numpy's OpenBLAS core. One
    fixed earlier (torch or numpy used before the pin) raises a NumericsError that names it and
    the fix. The thread count itself is set by each phase (`torch_threads`)."""
    reason = pin_unavailable()
    if reason:
        if not _STATE["warned"]:
            warnings.warn(f"train.numerics=pinned: {reason}; this run uses the host's native numerics, "
                          f"whose bits differ between machines (compare runs with `spade-bench compare`)",
                          stacklevel=2)
            _STATE["warned"] = True
        return "native"
    export_pin(threads)
    if _STATE["checked"]:
        return "pinned"
    import torch  # function-local: see _torch_lib

    wrong = []
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX2":
        wrong.append(f"ATen CPU capability {capability} (pinned: AVX2)")
    isa, _ = onednn_isa()
    if isa is not None and isa != "Intel AVX2":
        wrong.append(f"oneDNN ISA {isa!r} (pinned: AVX2)")
    _, cbwr = mkl_state()
    if cbwr is not None and cbwr != "OFF":
        wrong.append(f"MKL CBWR {cbwr} (pinned: OFF, MKL_CBWR unset)")
    blas = openblas_state()
    if blas is not None and blas[1].lower() != "haswell":
        wrong.append(f"numpy's OpenBLAS core {blas[1]} (pinned: Haswell)")
    if wrong:
        names = " ".join(f"{k}={v}" for k, v in PINNED_ENV.items())
        raise NumericsError(
            f"train.numerics=pinned, but this process already runs {'; '.join(wrong)}: torch or numpy "
            f"was used before the pin. Run it through the spade-bench command (it pins before torch "
            f"loads), or start Python with {names} in the environment (and MKL_CBWR unset), or use "
            f"--set train.numerics=native")
    if blas is not None and blas[2] != 1:
        _set_openblas_threads(1)
    _STATE["checked"] = True
    return "pinned"


def apply_mode(mode: str, threads: int) -> str:
    """The mode in force for a config's train.numerics and train.threads: `ensure_pinned` for
    "pinned"; "native" changes nothing."""
    if mode == "pinned":
        return ensure_pinned(threads)
    if mode != "native":
        raise NumericsError(f"train.numerics must be one of {', '.join(MODES)}, got {mode!r}")
    return "native"


def cache_tag(mode: str, threads: int) -> str:
    """What cached evaluator weights and real-image statistics are additionally keyed by: the
    pinned thread count ("" for native, whose caches keep their names)."""
    return f"pinned-t{threads}" if mode == "pinned" else ""


# ----------------------------------------------------------------------------- the record

def numerics_state(device: Any = "cpu", *, mode: str = "native", amp: bool = False) -> dict[str, Any]:
    """A flat, stable {field: value} record of what decides this process's numbers (module doc).

    Args:
        device: the torch device the run computes on.
        mode: the mode in force (`apply_mode`'s answer): "pinned" or "native".
        amp: whether the run computes in bf16 autocast.

    Call it once the pin is in force: it runs one small convolution (oneDNN's ISA) and reads
    MKL's mode, which fixes both for the process.
    """
    import torch  # function-local: see _torch_lib

    device = torch.device(device)
    cpu = cpu_info()
    config = torch.__config__.show()
    dnnl = re.search(r"MKL-DNN v([\d.]+)", config)
    mkl_version, cbwr = mkl_state()
    try:
        isa, impl = onednn_isa()
    except Exception:  # noqa: BLE001 - a record must never fail a run
        isa = impl = None
    blas = openblas_state()
    numpy = sys.modules.get("numpy")
    simd = None
    if numpy is not None:
        try:
            from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__
            simd = f"baseline {' '.join(__cpu_baseline__)}; dispatch {' '.join(__cpu_dispatch__)}"
        except ImportError:
            simd = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    mkldnn = torch.backends.mkldnn
    state: dict[str, Any] = {
        "mode": mode, "pin_unavailable": pin_unavailable() if mode != "pinned" else None,
        "cpu_vendor": cpu["vendor"], "cpu_model": cpu["model"], "cpu_family": cpu["family"],
        "cpu_model_number": cpu["model_number"], "cpu_flags": cpu["flags"],
        "torch": torch.__version__, "numpy": getattr(numpy, "__version__", None),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_version": dnnl.group(1) if dnnl else None, "onednn_isa": isa, "onednn_conv_impl": impl,
        "mkl_version": mkl_version, "mkl_cbwr": cbwr,
        "openblas_core": blas[1] if blas else None, "openblas_threads": blas[2] if blas else None,
        "openblas_version": blas[0].split(" ")[1] if blas and len(blas[0].split(" ")) > 1 else None,
        "numpy_simd": simd,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "affinity_cores": affinity,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "mkldnn_enabled": bool(mkldnn.enabled),
        "mkldnn_fp32_precision": getattr(mkldnn, "fp32_precision", None),
        "device": str(device), "bf16": bool(amp),
    }
    state.update({f"env.{name}": os.environ.get(name) for name in NUMERICS_ENV})
    cuda = {"cuda_device": None, "cuda_capability": None, "cuda_version": None, "cudnn_version": None,
            "tf32_matmul": None, "tf32_cudnn": None, "cudnn_deterministic": None, "cudnn_benchmark": None,
            "bf16_reduced_reduction": None, "fp16_reduced_reduction": None}
    if device.type == "cuda":
        matmul = torch.backends.cuda.matmul
        major, minor = torch.cuda.get_device_capability(device)
        cuda.update(cuda_device=torch.cuda.get_device_name(device), cuda_capability=f"{major}.{minor}",
                    cuda_version=torch.version.cuda, cudnn_version=torch.backends.cudnn.version(),
                    tf32_matmul=bool(matmul.allow_tf32), tf32_cudnn=bool(torch.backends.cudnn.allow_tf32),
                    cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
                    cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
                    bf16_reduced_reduction=bool(matmul.allow_bf16_reduced_precision_reduction),
                    fp16_reduced_reduction=bool(matmul.allow_fp16_reduced_precision_reduction))
    state.update(cuda)
    return state


def differing_fields(records: list[dict[str, Any]]) -> list[str]:
    """The numerics fields whose values differ among `records` (missing counts as None), in
    the order of the first record that has them."""
    keys: list[str] = []
    for record in records:
        keys += [k for k in record if k not in keys]
    return [k for k in keys if len({repr(r.get(k)) for r in records}) > 1]
