"""A miniature project with Ollama's build interface, generated as a real git repository.

It has what the pipeline relies on: CMakePresets.json with CPU, ROCm 6 and CUDA 11 presets (binaryDir
build/, installDir dist/), install components that land in lib/ollama/<runner dir>, and a cgo Go main
whose version variable is stamped with -ldflags. The binary loads its CPU backend from
../lib/ollama at run time, as Ollama does, so a broken package layout fails the run.

The Go main is the miniature's stand-in for Ollama's CLI and HTTP API, so that the pipeline's model run
(pipeline/modelrun.py) passes against a real server process where the real source is absent (CI):
`serve` (HTTP on OLLAMA_HOST: HEAD/GET /, GET /api/version, GET /api/tags, HEAD/POST /api/blobs/DIGEST,
POST /api/create, /api/show and /api/generate, streaming NDJSON with eval_count and eval_duration),
`create NAME -f Modelfile` (uploads the GGUF named by FROM; the server checks its digest, GGUF magic and
tensor count), `run NAME PROMPT --verbose` (prints api.Metrics.Summary's lines), `list` and `--version`. Like Ollama's
server it writes gin's debug-mode lines at each `serve` unless linked with server.mode=release.
It reads the GGUF for real but holds no model: its "tokens" are words picked by a hash of the model
digest, the prompt and the position, so they are deterministic.
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
    target_link_libraries(ggml-hip PRIVATE ggml-base)
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
#include <cstdio>
#include <hip/hip_runtime.h>

extern "C" const char *ggml_base_name(void);

__global__ void scale(float *x, float s, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}

extern "C" int ggml_gpu_scale(float *x, float s, int n) {
    hipLaunchKernelGGL(scale, dim3((n + 255) / 256), dim3(256), 0, 0, x, s, n);
    return hipGetLastError() == hipSuccess ? 0 : 1;
}

// What the runner asks a GPU backend: its name, and its devices (ggml's wording when HIP has none).
extern "C" const char *ggml_backend_name(void) { return ggml_base_name()[0] ? "ROCm" : "?"; }

extern "C" int ggml_backend_devices(void) {
    int n = 0;
    hipError_t e = hipGetDeviceCount(&n);
    if (e != hipSuccess) {
        fprintf(stderr, "ggml_cuda_init: failed to initialize ROCm: %s\\n", hipGetErrorString(e));
        return 0;
    }
    return n;
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

# Ollama's server package sets gin's mode from this variable (server/routes.go); upstream's release
# links it as "release", and gin then writes no [GIN-debug] lines at each start.
SERVER_GO = """\
package server

var mode string = "debug"

func DebugLines() []string {
	if mode == "release" {
		return nil
	}
	return []string{
		`[GIN-debug] [WARNING] Running in "debug" mode. Switch to "release" mode in production.`,
		`[GIN-debug] GET    /api/version --> github.com/ollama/ollama/server.(*Server).GenerateRoutes`,
	}
}
"""

MAIN_GO = r"""package main

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

static int backend_devices(const char *path) {
    void *h = dlopen(path, RTLD_NOW);
    int (*fn)(void) = h ? (int (*)(void))dlsym(h, "ggml_backend_devices") : NULL;
    return fn ? fn() : -1;
}
*/
import "C"

// The miniature's stand-in for Ollama's CLI and HTTP API: just enough of `serve`, `create`, `run`,
// `list` and `--version` for the pipeline's model run to pass against a real server process. It reads
// the GGUF it is given (magic, version, tensor and key counts) and "generates" deterministic tokens;
// there is no model inside.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	ollamaserver "github.com/ollama/ollama/server"
	"github.com/ollama/ollama/version"
)

func loadBackend() (string, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", "", err
	}
	lib := filepath.Join(filepath.Dir(exe), "..", "lib", "ollama", "libggml-cpu.so")
	if abs, err := filepath.Abs(lib); err == nil {
		lib = abs
	}
	path := C.CString(lib)
	defer C.free(unsafe.Pointer(path))
	var cerr *C.char
	name := C.backend_name(path, &cerr)
	if name == nil {
		return "", lib, errors.New(C.GoString(cerr))
	}
	return C.GoString(name), lib, nil
}

// Each GPU backend (lib/ollama/<runner>/libggml-*.so) is tried in a runner process with the library path
// Ollama gives its runners, as Ollama's discovery does; what the runner says goes to the server log.
func discoverGPUs(libdir string) {
	exe, err := os.Executable()
	if err != nil {
		return
	}
	found, _ := filepath.Glob(filepath.Join(libdir, "*", "libggml-*.so"))
	for _, lib := range found {
		cmd := exec.Command(exe, "runner", lib)
		cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Dir(lib)+":"+libdir)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		_ = cmd.Run()
	}
}

func runner(lib string) error {
	path := C.CString(lib)
	defer C.free(unsafe.Pointer(path))
	var cerr *C.char
	name := C.backend_name(path, &cerr)
	if name == nil {
		return fmt.Errorf("failed to load %s: %s", lib, C.GoString(cerr))
	}
	fmt.Fprintf(os.Stderr, "load_backend: loaded %s backend from %s\n", C.GoString(name), lib)
	fmt.Fprintf(os.Stderr, "%s: %d devices\n", C.GoString(name), int(C.backend_devices(path)))
	return nil
}

func hostAddr() string {
	h := os.Getenv("OLLAMA_HOST")
	if h == "" {
		h = "127.0.0.1:11434"
	}
	h = strings.TrimPrefix(strings.TrimPrefix(h, "http://"), "https://")
	if !strings.Contains(h, ":") {
		h += ":11434"
	}
	return h
}

func modelsDir() string {
	if d := os.Getenv("OLLAMA_MODELS"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".ollama", "models")
}

type ggufInfo struct {
	Version uint32 `json:"version"`
	Tensors uint64 `json:"tensors"`
	Keys    uint64 `json:"keys"`
}

func readGGUF(path string) (ggufInfo, error) {
	var info ggufInfo
	f, err := os.Open(path)
	if err != nil {
		return info, err
	}
	defer f.Close()
	var head [24]byte
	if _, err := io.ReadFull(f, head[:]); err != nil {
		return info, fmt.Errorf("not a GGUF file: %v", err)
	}
	if string(head[:4]) != "GGUF" {
		return info, fmt.Errorf("not a GGUF file: magic %q", head[:4])
	}
	info.Version = binary.LittleEndian.Uint32(head[4:8])
	info.Tensors = binary.LittleEndian.Uint64(head[8:16])
	info.Keys = binary.LittleEndian.Uint64(head[16:24])
	if info.Tensors == 0 {
		return info, errors.New("GGUF file has no tensors")
	}
	return info, nil
}

type model struct {
	Name       string         `json:"name"`
	Digest     string         `json:"digest"`
	Size       int64          `json:"size"`
	GGUF       ggufInfo       `json:"gguf"`
	Parameters map[string]any `json:"parameters"`
	Template   string         `json:"template"`
	Modified   time.Time      `json:"modified_at"`
}

type server struct {
	mu     sync.Mutex
	models map[string]*model
	dir    string
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code int, msg string) {
	log.Printf("level=WARN msg=%q status=%d", msg, code)
	writeJSON(w, code, map[string]string{"error": msg})
}

func (s *server) blobPath(digest string) string {
	return filepath.Join(s.dir, "blobs", strings.Replace(digest, ":", "-", 1))
}

func (s *server) blobs(w http.ResponseWriter, r *http.Request) {
	digest := strings.TrimPrefix(r.URL.Path, "/api/blobs/")
	if !strings.HasPrefix(digest, "sha256:") || len(digest) != 71 {
		fail(w, http.StatusBadRequest, "invalid digest "+digest)
		return
	}
	path := s.blobPath(digest)
	switch r.Method {
	case http.MethodHead:
		if _, err := os.Stat(path); err != nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusOK)
	case http.MethodPost:
		os.MkdirAll(filepath.Dir(path), 0o755)
		tmp := path + ".partial"
		f, err := os.Create(tmp)
		if err != nil {
			fail(w, http.StatusInternalServerError, err.Error())
			return
		}
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(f, h), r.Body)
		f.Close()
		if err != nil {
			fail(w, http.StatusInternalServerError, err.Error())
			return
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
			os.Remove(tmp)
			fail(w, http.StatusBadRequest, "digest mismatch: got "+got)
			return
		}
		os.Rename(tmp, path)
		log.Printf("level=INFO msg=\"blob stored\" digest=%s size=%d", digest, n)
		w.WriteHeader(http.StatusCreated)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

type createRequest struct {
	Model      string            `json:"model"`
	Files      map[string]string `json:"files"`
	Parameters map[string]any    `json:"parameters"`
	Template   string            `json:"template"`
}

func (s *server) create(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model == "" {
		fail(w, http.StatusBadRequest, "invalid create request")
		return
	}
	if len(req.Files) != 1 {
		fail(w, http.StatusBadRequest, "create needs exactly one GGUF file")
		return
	}
	var digest string
	for _, d := range req.Files {
		digest = d
	}
	path := s.blobPath(digest)
	st, err := os.Stat(path)
	if err != nil {
		fail(w, http.StatusBadRequest, "blob "+digest+" was not uploaded")
		return
	}
	info, err := readGGUF(path)
	if err != nil {
		fail(w, http.StatusBadRequest, err.Error())
		return
	}
	m := &model{Name: req.Model, Digest: digest, Size: st.Size(), GGUF: info, Parameters: req.Parameters,
		Template: req.Template, Modified: time.Now()}
	s.mu.Lock()
	s.models[req.Model] = m
	s.mu.Unlock()
	log.Printf("level=INFO msg=\"model created\" model=%s gguf.version=%d tensors=%d keys=%d", req.Model, info.Version, info.Tensors, info.Keys)
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	enc.Encode(map[string]string{"status": "parsing GGUF"})
	enc.Encode(map[string]string{"status": "writing manifest"})
	enc.Encode(map[string]string{"status": "success"})
}

func (s *server) lookup(name string) *model {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.models[name]; ok {
		return m
	}
	return s.models[strings.TrimSuffix(name, ":latest")]
}

func (s *server) show(w http.ResponseWriter, r *http.Request) {
	var req struct{ Model, Name string }
	json.NewDecoder(r.Body).Decode(&req)
	if req.Model == "" {
		req.Model = req.Name
	}
	m := s.lookup(req.Model)
	if m == nil {
		fail(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"capabilities": []string{"completion"},
		"details":      map[string]any{"format": "gguf", "family": "llama"},
		"model_info":   map[string]any{"gguf.tensor_count": m.GGUF.Tensors},
		"template":     m.Template,
	})
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return f, err == nil
	}
	return 0, false
}

var words = []string{"tiny", "model", "says", "hello", "from", "the", "miniature", "stand-in", "of", "ollama",
	"with", "deterministic", "tokens", "and", "no", "weights"}

func (s *server) generate(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req struct {
		Model   string         `json:"model"`
		Prompt  string         `json:"prompt"`
		Stream  *bool          `json:"stream"`
		Options map[string]any `json:"options"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(w, http.StatusBadRequest, "invalid generate request")
		return
	}
	m := s.lookup(req.Model)
	if m == nil {
		fail(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	n := 128
	if v, ok := number(m.Parameters["num_predict"]); ok {
		n = int(v)
	}
	if v, ok := number(req.Options["num_predict"]); ok {
		n = int(v)
	}
	// The model file is read again, as a runner would load it.
	if _, err := readGGUF(s.blobPath(m.Digest)); err != nil {
		fail(w, http.StatusInternalServerError, "loading model: "+err.Error())
		return
	}
	load := time.Since(start)
	log.Printf("level=INFO msg=\"generating\" model=%s num_predict=%d backend=cpu", m.Name, n)
	stream := req.Stream == nil || *req.Stream
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	evalStart := time.Now()
	var text strings.Builder
	for i := 0; i < n; i++ {
		h := fnv.New32a()
		fmt.Fprintf(h, "%s|%s|%d", m.Digest, req.Prompt, i)
		piece := words[h.Sum32()%uint32(len(words))] + " "
		text.WriteString(piece)
		if stream {
			enc.Encode(map[string]any{"model": m.Name, "created_at": time.Now(), "response": piece, "done": false})
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
	eval := time.Since(evalStart)
	if eval <= 0 {
		eval = time.Nanosecond
	}
	final := map[string]any{"model": m.Name, "created_at": time.Now(), "response": "", "done": true,
		"done_reason": "length", "total_duration": time.Since(start), "load_duration": load,
		"prompt_eval_count": len(req.Prompt), "prompt_eval_duration": 1000, "eval_count": n,
		"eval_duration": eval}
	if !stream {
		final["response"] = text.String()
	}
	enc.Encode(final)
}

func (s *server) tags(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	var list []map[string]any
	for _, m := range s.models {
		list = append(list, map[string]any{"name": m.Name + ":latest", "model": m.Name + ":latest",
			"size": m.Size, "digest": strings.TrimPrefix(m.Digest, "sha256:"), "modified_at": m.Modified})
	}
	s.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i]["name"].(string) < list[j]["name"].(string) })
	if list == nil {
		list = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": list})
}

func serve() error {
	log.SetFlags(0)
	log.SetPrefix("time=" + time.Now().UTC().Format(time.RFC3339) + " ")
	name, lib, err := loadBackend()
	if err != nil {
		return fmt.Errorf("no CPU backend: %v", err)
	}
	// The wording of ggml's own line, which the pipeline's model run reads.
	fmt.Fprintf(os.Stderr, "load_backend: loaded %s backend from %s\n", strings.ToUpper(name), lib)
	discoverGPUs(filepath.Dir(lib))
	log.Printf("level=INFO msg=\"inference compute\" id=cpu library=cpu")
	for _, line := range ollamaserver.DebugLines() {
		fmt.Fprintln(os.Stderr, line)
	}
	s := &server{models: map[string]*model{}, dir: modelsDir()}
	if err := os.MkdirAll(filepath.Join(s.dir, "blobs"), 0o755); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			fail(w, http.StatusNotFound, "404 page not found")
			return
		}
		io.WriteString(w, "Ollama is running")
	})
	mux.HandleFunc("/api/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": version.Version})
	})
	mux.HandleFunc("/api/blobs/", s.blobs)
	post := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				w.WriteHeader(http.StatusMethodNotAllowed)
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("/api/create", post(s.create))
	mux.HandleFunc("/api/show", post(s.show))
	mux.HandleFunc("/api/generate", post(s.generate))
	mux.HandleFunc("/api/tags", s.tags)
	ln, err := net.Listen("tcp", hostAddr())
	if err != nil {
		return err
	}
	log.Printf("level=INFO msg=\"Listening on %s (version %s)\"", ln.Addr(), version.Version)
	return http.Serve(ln, mux)
}

func call(method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		if r, ok := body.(io.Reader); ok {
			rd = r
		} else {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequest(method, "http://"+hostAddr()+path, rd)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return nil, errors.New(e.Error)
	}
	return resp, nil
}

func list() error {
	resp, err := call(http.MethodGet, "/api/tags", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var tags struct {
		Models []struct {
			Name   string
			Digest string
			Size   int64
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&tags); err != nil {
		return err
	}
	fmt.Printf("%-24s %-14s %s\n", "NAME", "ID", "SIZE")
	for _, m := range tags.Models {
		fmt.Printf("%-24s %-14s %d B\n", m.Name, m.Digest[:12], m.Size)
	}
	return nil
}

func parseModelfile(path string) (string, map[string]any, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil, "", err
	}
	defer f.Close()
	var from, template string
	params := map[string]any{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(cmd) {
		case "FROM":
			from = rest
		case "TEMPLATE":
			template = strings.Trim(rest, `"`)
		case "PARAMETER":
			k, v, _ := strings.Cut(rest, " ")
			v = strings.TrimSpace(v)
			if n, err := strconv.ParseFloat(v, 64); err == nil {
				params[k] = n
			} else {
				params[k] = v
			}
		default:
			return "", nil, "", fmt.Errorf("command must be one of FROM, TEMPLATE, PARAMETER: %s", cmd)
		}
	}
	if from == "" {
		return "", nil, "", errors.New("no FROM line")
	}
	if !filepath.IsAbs(from) {
		from = filepath.Join(filepath.Dir(path), from)
	}
	return from, params, template, sc.Err()
}

func create(args []string) error {
	var name, file string
	for i := 0; i < len(args); i++ {
		if args[i] == "-f" && i+1 < len(args) {
			file = args[i+1]
			i++
		} else if name == "" {
			name = args[i]
		}
	}
	if name == "" || file == "" {
		return errors.New("usage: ollama create MODEL -f Modelfile")
	}
	from, params, template, err := parseModelfile(file)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	fmt.Fprintf(os.Stderr, "copying file %s 100%%\n", digest)
	resp, err := call(http.MethodPost, "/api/blobs/"+digest, bytes.NewReader(data))
	if err != nil {
		return err
	}
	resp.Body.Close()
	resp, err = call(http.MethodPost, "/api/create", createRequest{Model: name,
		Files: map[string]string{filepath.Base(from): digest}, Parameters: params, Template: template})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var p struct{ Status, Error string }
		if err := dec.Decode(&p); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if p.Error != "" {
			return errors.New(p.Error)
		}
		fmt.Fprintln(os.Stderr, p.Status)
	}
}

func run(args []string) error {
	var name string
	var prompt []string
	verbose := false
	for _, a := range args {
		switch {
		case a == "--verbose":
			verbose = true
		case name == "":
			name = a
		default:
			prompt = append(prompt, a)
		}
	}
	if name == "" {
		return errors.New("usage: ollama run MODEL [PROMPT] [--verbose]")
	}
	resp, err := call(http.MethodPost, "/api/show", map[string]string{"model": name})
	if err != nil {
		return err
	}
	resp.Body.Close()
	resp, err = call(http.MethodPost, "/api/generate", map[string]any{"model": name, "prompt": strings.Join(prompt, " ")})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var g struct {
			Response           string
			Done               bool
			Error              string
			TotalDuration      time.Duration `json:"total_duration"`
			LoadDuration       time.Duration `json:"load_duration"`
			PromptEvalCount    int           `json:"prompt_eval_count"`
			PromptEvalDuration time.Duration `json:"prompt_eval_duration"`
			EvalCount          int           `json:"eval_count"`
			EvalDuration       time.Duration `json:"eval_duration"`
		}
		if err := dec.Decode(&g); err != nil {
			return err
		}
		if g.Error != "" {
			return errors.New(g.Error)
		}
		fmt.Print(g.Response)
		if g.Done {
			fmt.Println()
			if verbose {
				// The lines of Ollama's api.Metrics.Summary.
				fmt.Fprintf(os.Stderr, "total duration:       %v\n", g.TotalDuration)
				fmt.Fprintf(os.Stderr, "load duration:        %v\n", g.LoadDuration)
				fmt.Fprintf(os.Stderr, "prompt eval count:    %d token(s)\n", g.PromptEvalCount)
				fmt.Fprintf(os.Stderr, "eval count:           %d token(s)\n", g.EvalCount)
				fmt.Fprintf(os.Stderr, "eval duration:        %s\n", g.EvalDuration)
				fmt.Fprintf(os.Stderr, "eval rate:            %.2f tokens/s\n", float64(g.EvalCount)/g.EvalDuration.Seconds())
			}
			return nil
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ollama --version | backends | serve | create | run | list")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "--version", "-v", "version":
		fmt.Printf("ollama version is %s\n", version.Version)
	case "backends":
		name, _, lerr := loadBackend()
		if lerr != nil {
			fmt.Fprintln(os.Stderr, "load failed:", lerr)
			os.Exit(1)
		}
		fmt.Println("backend", name)
	case "serve":
		err = serve()
	case "runner":
		err = runner(os.Args[2])
	case "list", "ls":
		err = list()
	case "create":
		err = create(os.Args[2:])
	case "run":
		err = run(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "usage: ollama --version | backends | serve | create | run | list")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
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
        "server/server.go": SERVER_GO,
        "main.go": MAIN_GO,
    }
    new_repository(root, files, branch="main")
    commit_files(root, "mini ollama", tag=tag)
    return root, git(root, "rev-parse", "HEAD")


def new_repository(root: Path, files: dict[str, str], *, branch: str) -> None:
    """Write `files` (path: text) under root and make it a git repository on `branch`, nothing committed."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "init", "--quiet", f"--initial-branch={branch}")


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


# ---------------------------------------------------------------- the interface of v0.30 and later
#
# From v0.30 Ollama's tree holds no ggml: llama/server is a CMake project of its own that takes llama.cpp
# by FetchContent (the tag in LLAMA_CPP_VERSION), applies Ollama's compat patch (llama/compat) to an
# explicit FETCHCONTENT_SOURCE_DIR_LLAMA_CPP, and has presets of its own (llama/server/CMakePresets.json:
# `cpu`, GPU presets such as `vulkan`) with binaryDir ../../build/llama-server-<x>, installDir ../../dist
# and one install component, llama-server. The miniature has that interface: its "compat patch" writes
# ollama-compat.h into the llama.cpp source it is given (and refuses a source it already patched), and the
# miniature llama.cpp's server does not compile without that header, so a build that hands CMake a
# read-only, unpatched or reused llama.cpp fails. FetchContent's own download is pointed at a URL that
# cannot be reached: the build must never fetch.

SERVER_CMAKE = """\
cmake_minimum_required(VERSION 3.24)
project(ollama-llama-server C)
# As upstream's: every library and executable finds its neighbours in lib/ollama.
set(CMAKE_INSTALL_RPATH "$ORIGIN")
set(CMAKE_BUILD_RPATH "$ORIGIN")

include(FetchContent)
file(READ "${CMAKE_CURRENT_SOURCE_DIR}/../../LLAMA_CPP_VERSION" LLAMA_CPP_GIT_TAG)
string(STRIP "${LLAMA_CPP_GIT_TAG}" LLAMA_CPP_GIT_TAG)

if(DEFINED FETCHCONTENT_SOURCE_DIR_LLAMA_CPP AND NOT FETCHCONTENT_SOURCE_DIR_LLAMA_CPP STREQUAL "")
    execute_process(COMMAND ${CMAKE_COMMAND} -DSRC=${FETCHCONTENT_SOURCE_DIR_LLAMA_CPP}
                            -P ${CMAKE_CURRENT_SOURCE_DIR}/../compat/apply-patch.cmake
                    RESULT_VARIABLE _compat_result)
    if(NOT _compat_result EQUAL 0)
        message(FATAL_ERROR "Failed to apply Ollama llama.cpp compat patch to ${FETCHCONTENT_SOURCE_DIR_LLAMA_CPP}")
    endif()
endif()

FetchContent_Declare(llama_cpp GIT_REPOSITORY "https://llama-cpp.invalid/llama.cpp.git"
                     GIT_TAG ${LLAMA_CPP_GIT_TAG} GIT_SHALLOW TRUE)
FetchContent_MakeAvailable(llama_cpp)

if(OLLAMA_RUNNER_DIR)
    install(TARGETS ggml-${OLLAMA_GPU_BACKEND} LIBRARY DESTINATION lib/ollama/${OLLAMA_RUNNER_DIR}
            COMPONENT llama-server)
else()
    install(TARGETS llama-server llama-quantize RUNTIME DESTINATION lib/ollama COMPONENT llama-server)
    install(TARGETS ggml-base ggml-cpu LIBRARY DESTINATION lib/ollama COMPONENT llama-server)
endif()
"""

APPLY_PATCH = """\
if(EXISTS "${SRC}/ollama-compat.h")
    message(FATAL_ERROR "${SRC} is patched already")
endif()
file(WRITE "${SRC}/ollama-compat.h" "#define OLLAMA_COMPAT \\"ollama-compat\\"\\n")
"""

SERVER_PRESETS = {
    "version": 3,
    "configurePresets": [
        {"name": "default", "binaryDir": "${sourceDir}/../../build/llama-server",
         "installDir": "${sourceDir}/../../dist",
         "cacheVariables": {"CMAKE_BUILD_TYPE": "Release", "BUILD_SHARED_LIBS": "ON"}},
        {"name": "cpu", "inherits": ["default"], "binaryDir": "${sourceDir}/../../build/llama-server-cpu",
         "cacheVariables": {"OLLAMA_RUNNER_DIR": ""}},
        {"name": "vulkan", "inherits": ["default"], "binaryDir": "${sourceDir}/../../build/llama-server-vulkan",
         "cacheVariables": {"GGML_VULKAN": "ON", "OLLAMA_RUNNER_DIR": "vulkan", "OLLAMA_GPU_BACKEND": "vulkan"}},
    ],
    "buildPresets": [
        {"name": "cpu", "configurePreset": "cpu", "targets": ["llama-server", "llama-quantize"]},
        {"name": "vulkan", "configurePreset": "vulkan", "targets": ["ggml-vulkan"]},
    ],
}

LLAMA_CMAKE = """\
cmake_minimum_required(VERSION 3.21)
project(llama_cpp C)
set(CMAKE_LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)

add_library(ggml-base SHARED ggml/base.c)
add_library(ggml-cpu SHARED ggml/cpu.c)
target_link_libraries(ggml-cpu PRIVATE ggml-base)
set_target_properties(ggml-cpu PROPERTIES BUILD_RPATH "$ORIGIN" INSTALL_RPATH "$ORIGIN")
if(GGML_VULKAN)
    add_library(ggml-vulkan SHARED ggml/vulkan.c)
endif()
add_executable(llama-server tools/server.c)
target_include_directories(llama-server PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
# As llama.cpp's server links ggml, which depends on every backend it loads at run time (GGML_BACKEND_DL).
target_link_libraries(llama-server PRIVATE ggml-base)
add_dependencies(llama-server ggml-cpu)
add_executable(llama-quantize tools/quantize.c)
"""

LLAMA_SERVER_C = """\
#include <stdio.h>
#include "ollama-compat.h"

int main(void) { puts("llama-server " OLLAMA_COMPAT); return 0; }
"""


def create_llama_server(root: Path, llama_root: Path, tag: str = "v1.30.0",
                        llama_tag: str = "b100") -> tuple[Path, str, Path, str]:
    """The v0.30 interface: an Ollama-like repository at root whose `tag` names llama.cpp `llama_tag`,
    and that llama.cpp at llama_root; returns (root, commit, llama_root, llama commit)."""
    llama = {
        "CMakeLists.txt": LLAMA_CMAKE,
        "ggml/base.c": BASE_C,
        "ggml/cpu.c": CPU_C,
        "ggml/vulkan.c": 'const char *ggml_backend_name(void) { return "vulkan"; }\n',
        "tools/server.c": LLAMA_SERVER_C,
        "tools/quantize.c": "int main(void) { return 0; }\n",
    }
    new_repository(llama_root, llama, branch="master")
    llama_commit = commit_files(llama_root, "mini llama.cpp", tag=llama_tag)

    files = {
        "LLAMA_CPP_VERSION": llama_tag + "\n",
        "llama/server/CMakeLists.txt": SERVER_CMAKE,
        "llama/server/CMakePresets.json": json.dumps(SERVER_PRESETS, indent=2) + "\n",
        "llama/compat/apply-patch.cmake": APPLY_PATCH,
        "go.mod": f"module {MODULE}\n\ngo 1.22\n",
        "version/version.go": VERSION_GO,
        "server/server.go": SERVER_GO,
        "main.go": MAIN_GO,
    }
    new_repository(root, files, branch="main")
    commit = commit_files(root, "mini ollama, llama/server interface", tag=tag)
    return root, commit, llama_root, llama_commit
