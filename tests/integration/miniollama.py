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

if(AMDGPU_TARGETS)
    add_library(ggml-hip SHARED ggml/gpu.c)
    target_compile_definitions(ggml-hip PRIVATE "GPU_ARCHS=\\"${AMDGPU_TARGETS}\\"")
    install(TARGETS ggml-hip LIBRARY DESTINATION ${OLLAMA_INSTALL_DIR} COMPONENT HIP)
endif()
if(CMAKE_CUDA_ARCHITECTURES)
    add_library(ggml-cuda SHARED ggml/gpu.c)
    target_compile_definitions(ggml-cuda PRIVATE "GPU_ARCHS=\\"${CMAKE_CUDA_ARCHITECTURES}\\"")
    install(TARGETS ggml-cuda LIBRARY DESTINATION ${OLLAMA_INSTALL_DIR} COMPONENT CUDA)
endif()
"""

PRESETS = {
    "version": 3,
    "configurePresets": [
        {"name": "Default", "binaryDir": "${sourceDir}/build", "installDir": "${sourceDir}/dist",
         "cacheVariables": {"CMAKE_BUILD_TYPE": "Release"}},
        {"name": "CPU", "inherits": ["Default"]},
        {"name": "ROCm 6", "inherits": ["Default"], "cacheVariables": {"AMDGPU_TARGETS": "gfx1100"}},
        {"name": "CUDA 11", "inherits": ["Default"], "cacheVariables": {"CMAKE_CUDA_ARCHITECTURES": "50"}},
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
GPU_C = 'const char *ggml_gpu_archs(void) { return GPU_ARCHS; }\n'

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
        "ggml/gpu.c": GPU_C,
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
