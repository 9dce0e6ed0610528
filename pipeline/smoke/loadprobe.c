/* loadprobe: load shared libraries with every symbol bound, as the dynamic loader would for a runner,
 * and ask the GPU runtimes among them what they answer without a GPU. Compiled on the floor system
 * (the oldest suite a package is verified on) so that one binary runs on every suite above it; it
 * needs nothing but libc and libdl. Run it with LD_BIND_NOW=1 and the LD_LIBRARY_PATH a runner gets.
 *
 *   loadprobe --each FILE...   each FILE alone in a child process, dlopen RTLD_NOW | RTLD_LOCAL: a
 *                              library whose own dependencies do not bring in everything it needs fails
 *                              here even where an earlier RTLD_GLOBAL library would cover for it.
 *   loadprobe FILE...          every FILE into this process, RTLD_NOW | RTLD_GLOBAL, then the runtimes:
 *                              hipRuntimeGetVersion, hipGetDeviceCount (100, hipErrorNoDevice, without
 *                              a GPU), amd_comgr_get_version and its ISA count, rocblas_get_version_string,
 *                              hipblasCreate; each where a loaded library defines it.
 *
 * One line per result, fields separated by tabs: `load|alone FILE ok` or `load|alone FILE FAILED
 * dlerror`, `answer RUNTIME CALL rc VALUE`. The exit status is the number of files that failed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *sym(const char *name) { return dlsym(RTLD_DEFAULT, name); }

static void one_line(const char *s)
{
    /* dlerror() text on one line: tabs and newlines become spaces. */
    for (; *s; s++)
        putchar(*s == '\t' || *s == '\n' ? ' ' : *s);
}

static int load(const char *kind, const char *path, int flags)
{
    void *h = dlopen(path, flags);
    printf("%s\t%s\t", kind, path);
    if (h) {
        printf("ok\n");
        return 0;
    }
    printf("FAILED\t");
    one_line(dlerror());
    printf("\n");
    return 1;
}

static int each(int n, char **files)
{
    int failed = 0;
    for (int i = 0; i < n; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return n;
        }
        if (pid == 0) {
            int r = load("alone", files[i], RTLD_NOW | RTLD_LOCAL);
            fflush(stdout);
            _exit(r);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (!WIFEXITED(status))
                printf("alone\t%s\tFAILED\tkilled by signal %d\n", files[i], WTERMSIG(status));
            failed++;
        }
    }
    return failed;
}

static void runtimes(void)
{
    int (*hip_version)(int *) = sym("hipRuntimeGetVersion");
    int (*hip_count)(int *) = sym("hipGetDeviceCount");
    if (hip_version && hip_count) {
        int v = 0, c = 0;
        int rc = hip_version(&v);
        printf("answer\thip\truntime_version\t%d\t%d\n", rc, v);
        fflush(stdout);
        rc = hip_count(&c);
        printf("answer\thip\tdevice_count\t%d\t%d\n", rc, c);
    }
    int (*comgr_version)(size_t *, size_t *) = sym("amd_comgr_get_version");
    int (*isa_count)(size_t *) = sym("amd_comgr_get_isa_count");
    if (comgr_version && isa_count) {
        size_t major = 0, minor = 0, count = 0;
        comgr_version(&major, &minor);
        int rc = isa_count(&count);
        printf("answer\tcomgr\tversion\t0\t%zu.%zu\n", major, minor);
        printf("answer\tcomgr\tisa_count\t%d\t%zu\n", rc, count);
    }
    int (*rocblas_size)(size_t *) = sym("rocblas_get_version_string_size");
    int (*rocblas_version)(char *, size_t) = sym("rocblas_get_version_string");
    if (rocblas_size && rocblas_version) {
        size_t len = 0;
        rocblas_size(&len);
        char *s = calloc(1, len + 1);
        int rc = s ? rocblas_version(s, len) : -1;
        printf("answer\trocblas\tversion\t%d\t%s\n", rc, s ? s : "");
        free(s);
    }
    int (*hipblas_create)(void **) = sym("hipblasCreate");
    const char *(*hipblas_status)(int) = sym("hipblasStatusToString");
    if (hipblas_create) {
        void *handle = NULL;
        fflush(stdout);
        int rc = hipblas_create(&handle);
        printf("answer\thipblas\tcreate\t%d\t%s\n", rc, hipblas_status ? hipblas_status(rc) : "");
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--each") == 0)
        return each(argc - 2, argv + 2);
    int failed = 0;
    for (int i = 1; i < argc; i++)
        failed += load("load", argv[i], RTLD_NOW | RTLD_GLOBAL);
    runtimes();
    fflush(stdout);
    return failed;
}
