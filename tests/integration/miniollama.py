"""A miniature project with Ollama's build interface, generated as a real git repository.

It has what the pipeline relies on: CMakePresets.json with CPU, ROCm 6 and CUDA 11 presets (binaryDir
build/, installDir dist/), install components that land in lib/ollama/<runner dir>, and a cgo Go main
whose version variable is stamped with -ldflags. The binary loads its CPU backend from
../lib/ollama at run time, as Ollama does, so a broken package layout fails the run.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

MODULE = "github.com/ollama/ollama"

CMAKE = """\
cmake_minimum_required(VERSION 3.21)
project(MiniOllama C)

set(OLLAMA_BUILD_DIR ${CMAKE_BINARY_DIR}/lib/ollama)
set(OLLAMA_INSTALL_DIR ${CMAKE_INSTALL_PREFIX}/lib/ollama/${OLLAMA_RUNNER_DIR})
set(CMAKE_LIBRARY_OUTPUT_DIRECTORY ${OLLAMA_BUILD_DIR})

add_library(ggml-base SHARED ggml/base.c)
add_library(ggml-cpu SHARED ggml/cpu.c)
target_link_libraries(ggml-cpu PRIVATE ggml-base)
set_target_properties(ggml-cpu PROPERTIES BUILD_RPATH "$ORIGIN" INSTALL_RPATH "$ORIGIN")
install(TARGETS ggml-base ggml-cpu LIBRARY DESTINATION ${OLLAMA_INSTALL_DIR} COMPONENT CPU)

# Real GPU code, compiled as ggml does: for the archs the build passes in, nothing else.
if(AMDGPU_TARGETS)
    set(CMAKE_HIP_ARCHITECTURES ${AMDGPU_TARGETS})
    enable_language(HIP)
    add_library(ggml-hip SHARED ggml/gpu.hip ggml/gpu2.hip)
    install(TARGETS ggml-hip LIBRARY DESTINATION ${OLLAMA_INSTALL_DIR} COMPONENT HIP)
endif()
if(CMAKE_CUDA_ARCHITECTURES)
    enable_language(CUDA)
    add_library(ggml-cuda SHARED ggml/gpu.cu)
    install(TARGETS ggml-cuda LIBRARY DESTINATION ${OLLAMA_INSTALL_DIR} COMPONENT CUDA)
endif()
"""

PRESETS = {
    "version": 3,
    "configurePresets": [
        {"name": "Default", "binaryDir": "${sourceDir}/build", "installDir": "${sourceDir}/dist",
         "cacheVariables": {"CMAKE_BUILD_TYPE": "Release"}},
        {"name": "CPU", "inherits": ["Default"]},
        # Upstream's flag values, which the pipeline must cope with (-parallel-jobs is AMD clang's).
        {"name": "ROCm 6", "inherits": ["Default"],
         "cacheVariables": {"CMAKE_HIP_PLATFORM": "amd", "CMAKE_HIP_FLAGS": "-parallel-jobs=4",
                            "AMDGPU_TARGETS": "gfx1010;gfx1030;gfx1100"}},
        {"name": "CUDA 11", "inherits": ["Default"],
         "cacheVariables": {"CMAKE_CUDA_ARCHITECTURES": "50-virtual;60-virtual",
                            "CMAKE_CUDA_FLAGS": "-Wno-deprecated-gpu-targets -t 2"}},
    ],
    "buildPresets": [
        {"name": "CPU", "configurePreset": "CPU", "targets": ["ggml-cpu"]},
        {"name": "ROCm 6", "configurePreset": "ROCm 6", "targets": ["ggml-hip"]},
        {"name": "CUDA 11", "configurePreset": "CUDA 11", "targets": ["ggml-cuda"]},
    ],
}

BASE_C = 'const char *ggml_base_name(void) { return "ggml-base"; }\n'
CPU_C = """\
const char *ggml_base_name(void);
const char *ggml_backend_name(void) { return ggml_base_name()[0] ? "cpu" : "?"; }
"""
HIP_KERNEL = """\
#include <hip/hip_runtime.h>

__global__ void scale(float *x, float s, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}

extern "C" int ggml_gpu_scale(float *x, float s, int n) {
    hipLaunchKernelGGL(scale, dim3((n + 255) / 256), dim3(256), 0, 0, x, s, n);
    return hipGetLastError() == hipSuccess ? 0 : 1;
}
"""
HIP_KERNEL2 = """\
#include <hip/hip_runtime.h>

__global__ void add(float *x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += a;
}

extern "C" int ggml_gpu_add(float *x, float a, int n) {
    hipLaunchKernelGGL(add, dim3((n + 255) / 256), dim3(256), 0, 0, x, a, n);
    return hipGetLastError() == hipSuccess ? 0 : 1;
}
"""
CUDA_KERNEL = """\
__global__ void scale(float *x, float s, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}

extern "C" int ggml_gpu_scale(float *x, float s, int n) {
    scale<<<(n + 255) / 256, 256>>>(x, s, n);
    return cudaGetLastError() == cudaSuccess ? 0 : 1;
}
"""

VERSION_GO = """\
package version

var Version string = "0.0.0"
"""

MAIN_GO = """\
package main

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

static const char *backend_name(const char *path, char **err) {
    void *h = dlopen(path, RTLD_NOW);
    if (!h) { *err = dlerror(); return NULL; }
    const char *(*fn)(void) = (const char *(*)(void))dlsym(h, "ggml_backend_name");
    if (!fn) { *err = dlerror(); return NULL; }
    return fn();
}
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/ollama/ollama/version"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Printf("ollama version is %s\\n", version.Version)
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "backends" {
		exe, err := os.Executable()
		if err != nil {
			panic(err)
		}
		lib := filepath.Join(filepath.Dir(exe), "..", "lib", "ollama", "libggml-cpu.so")
		path := C.CString(lib)
		defer C.free(unsafe.Pointer(path))
		var cerr *C.char
		name := C.backend_name(path, &cerr)
		if name == nil {
			fmt.Fprintln(os.Stderr, "load failed:", C.GoString(cerr))
			os.Exit(1)
		}
		fmt.Println("backend", C.GoString(name))
		return
	}
	fmt.Fprintln(os.Stderr, "usage: ollama --version | backends")
	os.Exit(2)
}
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def create(root: Path, tag: str = "v1.2.3", *, go_version: str = "1.22") -> tuple[Path, str]:
    """Write the project as a git repository at root with one commit tagged `tag`; return (root, commit)."""
    files = {
        "CMakeLists.txt": CMAKE,
        "CMakePresets.json": json.dumps(PRESETS, indent=2) + "\n",
        "ggml/base.c": BASE_C,
        "ggml/cpu.c": CPU_C,
        "ggml/gpu.hip": HIP_KERNEL,
        "ggml/gpu2.hip": HIP_KERNEL2,
        "ggml/gpu.cu": CUDA_KERNEL,
        "go.mod": f"module {MODULE}\n\ngo {go_version}\n",
        "version/version.go": VERSION_GO,
        "main.go": MAIN_GO,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "init", "--quiet", "--initial-branch=main")
    commit_files(root, "mini ollama", tag=tag)
    return root, git(root, "rev-parse", "HEAD")


def commit_files(root: Path, message: str, *, tag: str | None = None) -> str:
    env_args = ["-c", "user.name=Fixture", "-c", "user.email=fixture@example.invalid",
                "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"]
    git(root, "add", "-A")
    # A fixed date keeps commit ids, and so SOURCE_DATE_EPOCH, stable across runs.
    subprocess.run(["git", "-C", str(root), *env_args, "commit", "--quiet", "-m", message],
                   check=True, env={**os.environ, "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z",
                                    "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z"})
    if tag:
        git(root, "tag", "--force", tag)
    return git(root, "rev-parse", "HEAD")
