"""Build script for fastcnn's compiled kernels.

One table of extensions; an OpenMP probe (compile and run a tiny program) with a
serial fallback; per-file instruction-set flags for the SIMD micro-kernels.

Environment switches (documented in README.md):
  FASTCNN_NO_OPENMP=1              build serial kernels
  FASTCNN_NATIVE=1                 add -march=native (the wheel then only runs on this CPU)
  FASTCNN_SANITIZE=address,undefined  compile and link with the sanitizers
  FASTCNN_DEBUG=1                  Cython bounds checks and -O0 -g
"""
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import warnings
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

# The GEMM engine: portable sources compiled with the common flags ...
CSRC_COMMON = ["csrc/fc_cpu.c", "csrc/fc_pack.c", "csrc/fc_gemm.c", "csrc/fc_gemv.c",
               "csrc/fc_ukr_generic.c"]
# ... and the micro-kernels that need their own instruction-set flags (x86-64 only).
CSRC_ISA = {
    "csrc/fc_ukr_avx2.c": ["-mavx2", "-mfma"],
    "csrc/fc_ukr_avx512.c": ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mfma"],
}

# module name -> links the GEMM engine
EXTENSIONS = {
    "fastcnn._kernels._gemm": True,
    "fastcnn._kernels._conv": True,
    "fastcnn._kernels._pool": False,
    "fastcnn._kernels._pointwise": False,
    "fastcnn._kernels._norm": False,
    "fastcnn._kernels._loss": False,
}

IS_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


OPENMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel num_threads(2) reduction(+:n)
    n += 1;
    printf("%d\n", n);
    return n == 2 ? 0 : 1;
}
"""


def probe_openmp(compiler_cmd):
    """Compile and run a tiny OpenMP program; return the flag that works or None."""
    if _env_flag("FASTCNN_NO_OPENMP"):
        return None
    candidates = ["-fopenmp", "-qopenmp", "-Xpreprocessor -fopenmp"]
    tmp = tempfile.mkdtemp(prefix="fastcnn-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        for flag in candidates:
            cmd = compiler_cmd + [src, "-o", exe] + flag.split()
            try:
                r = subprocess.run(cmd, capture_output=True, timeout=120)
                if r.returncode != 0:
                    continue
                r = subprocess.run([exe], capture_output=True, timeout=60)
                if r.returncode == 0:
                    return flag
            except (OSError, subprocess.SubprocessError):
                continue
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """Adds OpenMP, optimisation and sanitizer flags to every extension and
    links the separately compiled SIMD micro-kernels into the GEMM users."""

    def build_extensions(self):
        cc = self.compiler.compiler_so[:1] if hasattr(self.compiler, "compiler_so") else ["cc"]
        self.omp_flag = probe_openmp(cc)
        if self.omp_flag is None:
            msg = ("fastcnn: building WITHOUT OpenMP (serial kernels)"
                   + (" because FASTCNN_NO_OPENMP is set" if _env_flag("FASTCNN_NO_OPENMP")
                      else ": the compiler could not build and run an OpenMP program"))
            warnings.warn(msg)
            print(msg, file=sys.stderr)
        # short loops stay loops: no calls to memset/memcpy for rows of a few elements
        common = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fno-tree-loop-distribute-patterns"]
        link = []
        if _env_flag("FASTCNN_DEBUG"):
            common = ["-O0", "-g"]
        if _env_flag("FASTCNN_NATIVE"):
            common.append("-march=native")
        sanitize = os.environ.get("FASTCNN_SANITIZE", "").strip()
        if sanitize:
            # -O1 keeps the instrumented build quick and the reports readable
            common = [f for f in common if not f.startswith("-O")]
            common += ["-O1", "-fsanitize=" + sanitize, "-fno-omit-frame-pointer", "-g"]
            link += ["-fsanitize=" + sanitize]
        omp = self.omp_flag.split() if self.omp_flag else []
        self.common_cflags = common + omp + ["-DFC_OPENMP=%d" % (1 if omp else 0)]
        self.common_ldflags = link + omp
        self.isa_objects = None
        self.isa_lock = threading.Lock()
        super().build_extensions()

    def _compile_isa_objects(self, ext):
        with self.isa_lock:
            return self._compile_isa_objects_once()

    def _compile_isa_objects_once(self):
        if self.isa_objects is not None:
            return self.isa_objects
        objs = []
        if IS_X86:
            for src, flags in CSRC_ISA.items():
                objs += self.compiler.compile(
                    [src], output_dir=self.build_temp, include_dirs=["csrc"],
                    extra_postargs=self.common_cflags + flags, debug=self.debug)
        self.isa_objects = objs
        return objs

    def build_extension(self, ext):
        ext.extra_compile_args = list(ext.extra_compile_args or []) + self.common_cflags
        ext.extra_link_args = list(ext.extra_link_args or []) + self.common_ldflags
        if EXTENSIONS.get(ext.name, False):
            ext.extra_objects = list(ext.extra_objects or []) + self._compile_isa_objects(ext)
        super().build_extension(ext)


def extensions():
    exts = []
    # FASTCNN_BUILD_ONLY=_gemm,_conv limits a development build to some modules.
    only = [m.strip() for m in os.environ.get("FASTCNN_BUILD_ONLY", "").split(",") if m.strip()]
    for name, uses_gemm in EXTENSIONS.items():
        if only and name.rsplit(".", 1)[1] not in only:
            continue
        pyx = name.replace(".", "/") + ".pyx"
        if not os.path.exists(os.path.join(HERE, pyx)):
            continue
        sources = [pyx] + (CSRC_COMMON if uses_gemm else [])
        ext = Extension(
            name, sources,
            include_dirs=[np.get_include(), "csrc"],
            # the micro-kernel files are linked as separately compiled objects
            depends=(sorted(glob("csrc/*.h")) + sorted(glob("fastcnn/_kernels/*.pxd"))
                     + (sorted(CSRC_ISA) if uses_gemm else [])),
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
        exts.append(ext)
    debug = _env_flag("FASTCNN_DEBUG")
    return cythonize(
        exts,
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug,
            "wraparound": debug,
            "initializedcheck": debug,
            "cdivision": True,
            "embedsignature": True,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
