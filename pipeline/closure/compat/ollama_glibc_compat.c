/* libollama-glibc-compat.so.1: stand-ins for the glibc functions and data that libraries built
 * against a newer glibc use and that the floor glibc (2.31, Debian 11) lacks.
 *
 * The floor pass (pipeline/closure/floor.py) makes each such reference unversioned and adds this library as
 * DT_NEEDED. An unversioned reference binds to the first default definition in the lookup scope:
 * libc's own where libc has the function (any glibc at or above the version named next to each
 * function below; libc sits in the global scope, searched before a library's own dependencies),
 * this library's on an older glibc. So these definitions only ever run where glibc has none.
 *
 * Built against the floor glibc only: the package stage compiles it in the host builder (Debian 11
 * bullseye, glibc 2.31) and refuses any other glibc. Built against a glibc >= 2.38, the strtol calls
 * below would be redirected to __isoc23_strtol, i.e. to ourselves.
 * It must export nothing the floor glibc defines; the pass checks that.
 *
 * No <sys/stat.h> here: its extern-inline stat()/fstat() of glibc < 2.33 would clash with the
 * definitions below. Only pointers to struct stat pass through, so the type stays incomplete.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/types.h>
#include <unistd.h>
#include <wchar.h>
#include <wctype.h>

#define EXPORT __attribute__((visibility("default")))

/* ------------------------------------------------------------------------------------------
 * glibc 2.32: __libc_single_threaded (data). libstdc++ >= 11 skips atomic reference counting
 * while it is non-zero. 0 means "maybe multi-threaded": always the atomic path, always correct.
 */
EXPORT char __libc_single_threaded = 0;

/* ------------------------------------------------------------------------------------------
 * glibc 2.33: stat, fstat, lstat, fstatat, mknod, mknodat and their *64 names became real
 * exported functions. Before, <sys/stat.h> turned them into calls of the versioned __xstat
 * family (libc_nonshared.a). On x86-64 struct stat and struct stat64 are the same layout, and the
 * version arguments are those of glibc 2.31's sysdeps/unix/sysv/linux/x86/bits/stat.h for x86-64:
 * _STAT_VER = _STAT_VER_LINUX = 1, _MKNOD_VER_LINUX = 0.
 */
struct stat;
struct stat64;
extern int __xstat(int, const char *, struct stat *);
extern int __fxstat(int, int, struct stat *);
extern int __lxstat(int, const char *, struct stat *);
extern int __fxstatat(int, int, const char *, struct stat *, int);
extern int __xstat64(int, const char *, struct stat64 *);
extern int __fxstat64(int, int, struct stat64 *);
extern int __lxstat64(int, const char *, struct stat64 *);
extern int __fxstatat64(int, int, const char *, struct stat64 *, int);
extern int __xmknod(int, const char *, mode_t, dev_t *);
extern int __xmknodat(int, int, const char *, mode_t, dev_t *);
#define STAT_VER 1  /* _STAT_VER_LINUX, x86-64 */
#define MKNOD_VER 0 /* _MKNOD_VER_LINUX */

EXPORT int stat(const char *path, struct stat *buf) { return __xstat(STAT_VER, path, buf); }
EXPORT int fstat(int fd, struct stat *buf) { return __fxstat(STAT_VER, fd, buf); }
EXPORT int lstat(const char *path, struct stat *buf) { return __lxstat(STAT_VER, path, buf); }
EXPORT int fstatat(int dirfd, const char *path, struct stat *buf, int flags)
{
    return __fxstatat(STAT_VER, dirfd, path, buf, flags);
}
EXPORT int stat64(const char *path, struct stat64 *buf) { return __xstat64(STAT_VER, path, buf); }
EXPORT int fstat64(int fd, struct stat64 *buf) { return __fxstat64(STAT_VER, fd, buf); }
EXPORT int lstat64(const char *path, struct stat64 *buf) { return __lxstat64(STAT_VER, path, buf); }
EXPORT int fstatat64(int dirfd, const char *path, struct stat64 *buf, int flags)
{
    return __fxstatat64(STAT_VER, dirfd, path, buf, flags);
}
EXPORT int mknod(const char *path, mode_t mode, dev_t dev) { return __xmknod(MKNOD_VER, path, mode, &dev); }
EXPORT int mknodat(int dirfd, const char *path, mode_t mode, dev_t dev)
{
    return __xmknodat(MKNOD_VER, dirfd, path, mode, &dev);
}

/* ------------------------------------------------------------------------------------------
 * glibc 2.33: mallinfo2, mallinfo with size_t fields. Built on mallinfo(), whose int fields
 * wrap above 2 GiB: the figures are exact below that, low 32 bits above (statistics only; LLVM
 * uses it for -time-passes style memory reports).
 */
struct mallinfo2 {
    size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};

EXPORT struct mallinfo2 mallinfo2(void)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    struct mallinfo m = mallinfo();
#pragma GCC diagnostic pop
    struct mallinfo2 r = {
        (unsigned)m.arena, (unsigned)m.ordblks, (unsigned)m.smblks, (unsigned)m.hblks,
        (unsigned)m.hblkhd, (unsigned)m.usmblks, (unsigned)m.fsmblks, (unsigned)m.uordblks,
        (unsigned)m.fordblks, (unsigned)m.keepcost,
    };
    return r;
}

/* ------------------------------------------------------------------------------------------
 * glibc 2.36: arc4random, arc4random_buf, arc4random_uniform. Kernel randomness through
 * getrandom (glibc 2.25); /dev/urandom where the kernel lacks the system call. Like glibc's, they
 * never fail: without any source of randomness the process is aborted.
 */
static void fill_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno != ENOSYS)
                abort();
            int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                abort();
            while (n > 0) {
                ssize_t r = read(fd, p, n);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0)
                    abort();
                p += r;
                n -= (size_t)r;
            }
            close(fd);
            return;
        }
        p += got;
        n -= (size_t)got;
    }
}

EXPORT uint32_t arc4random(void)
{
    uint32_t v;
    fill_random(&v, sizeof v);
    return v;
}

EXPORT void arc4random_buf(void *buf, size_t n) { fill_random(buf, n); }

EXPORT uint32_t arc4random_uniform(uint32_t upper_bound)
{
    if (upper_bound < 2)
        return 0;
    /* Reject the values below 2**32 % upper_bound, so that the result is uniform. */
    uint32_t min = -upper_bound % upper_bound;
    for (;;) {
        uint32_t r = arc4random();
        if (r >= min)
            return r % upper_bound;
    }
}

/* ------------------------------------------------------------------------------------------
 * glibc 2.38: the ISO C23 integer parsers. C23 differs from C99 in one thing: with base 0 or 2, a
 * "0b"/"0B" prefix followed by a binary digit introduces a binary number (glibc 2.38
 * stdlib/strtol_l.c). Everything else is C99, so the C99 function does the work, and only a
 * binary prefix is handled here, with C99's sign, overflow (ERANGE) and end-pointer rules.
 */
#define C23_PARSER(NAME, CHAR, TYPE, C99, ISSPACE, SIGNED, MIN, MAX, UMAG)                    \
    EXPORT TYPE NAME(const CHAR *nptr, CHAR **endptr, int base)                              \
    {                                                                                         \
        const CHAR *s = nptr;                                                                 \
        while (ISSPACE(*s))                                                                   \
            s++;                                                                              \
        int neg = 0;                                                                          \
        if (*s == '-' || *s == '+')                                                           \
            neg = *s++ == '-';                                                                \
        if ((base == 0 || base == 2) && s[0] == '0' && (s[1] == 'b' || s[1] == 'B')          \
            && (s[2] == '0' || s[2] == '1')) {                                                \
            CHAR *end;                                                                        \
            int saved = errno;                                                                \
            errno = 0;                                                                        \
            unsigned long long mag = UMAG(s + 2, &end, 2);                                    \
            int overflow = errno == ERANGE;                                                   \
            errno = saved;                                                                    \
            if (endptr)                                                                       \
                *endptr = end;                                                                \
            if (SIGNED) {                                                                     \
                unsigned long long lim = neg ? (unsigned long long)(MAX) + 1 : (MAX);         \
                if (overflow || mag > lim) {                                                  \
                    errno = ERANGE;                                                           \
                    return neg ? (TYPE)(MIN) : (TYPE)(MAX);                                   \
                }                                                                             \
                return neg ? (TYPE)(0 - mag) : (TYPE)mag;                                     \
            }                                                                                 \
            if (overflow || mag > (unsigned long long)(MAX)) {                                \
                errno = ERANGE;                                                               \
                return (TYPE)(MAX);                                                           \
            }                                                                                 \
            return neg ? (TYPE)(0 - mag) : (TYPE)mag;                                         \
        }                                                                                     \
        return C99(nptr, endptr, base);                                                       \
    }

/* Leading white space as the C99 functions skip it: isspace() / iswspace() of the current locale. */
#define CISSPACE(c) isspace((unsigned char)(c))
C23_PARSER(__isoc23_strtol, char, long, strtol, CISSPACE, 1, LONG_MIN, LONG_MAX, strtoull)
C23_PARSER(__isoc23_strtoll, char, long long, strtoll, CISSPACE, 1, LLONG_MIN, LLONG_MAX, strtoull)
C23_PARSER(__isoc23_strtoul, char, unsigned long, strtoul, CISSPACE, 0, 0, ULONG_MAX, strtoull)
C23_PARSER(__isoc23_strtoull, char, unsigned long long, strtoull, CISSPACE, 0, 0, ULLONG_MAX, strtoull)
C23_PARSER(__isoc23_strtoimax, char, intmax_t, strtoimax, CISSPACE, 1, INTMAX_MIN, INTMAX_MAX, strtoull)
C23_PARSER(__isoc23_strtoumax, char, uintmax_t, strtoumax, CISSPACE, 0, 0, UINTMAX_MAX, strtoull)

C23_PARSER(__isoc23_wcstol, wchar_t, long, wcstol, iswspace, 1, LONG_MIN, LONG_MAX, wcstoull)
C23_PARSER(__isoc23_wcstoll, wchar_t, long long, wcstoll, iswspace, 1, LLONG_MIN, LLONG_MAX, wcstoull)
C23_PARSER(__isoc23_wcstoul, wchar_t, unsigned long, wcstoul, iswspace, 0, 0, ULONG_MAX, wcstoull)
C23_PARSER(__isoc23_wcstoull, wchar_t, unsigned long long, wcstoull, iswspace, 0, 0, ULLONG_MAX, wcstoull)
C23_PARSER(__isoc23_wcstoimax, wchar_t, intmax_t, wcstoimax, iswspace, 1, INTMAX_MIN, INTMAX_MAX, wcstoull)
C23_PARSER(__isoc23_wcstoumax, wchar_t, uintmax_t, wcstoumax, iswspace, 0, 0, UINTMAX_MAX, wcstoull)

/* ------------------------------------------------------------------------------------------
 * glibc 2.38: the ISO C23 scanf family. C23 adds the %b conversion and lets %i take a "0b"
 * prefix; otherwise it is C99's. These call glibc's C99 implementations (__isoc99_*, glibc 2.7):
 * exact for every format without %b or %i, and for %i input without a "0b" prefix. A %b
 * conversion fails as an unknown one does in C99 (the count of assigned items so far is returned).
 */
extern int __isoc99_vsscanf(const char *, const char *, va_list);
extern int __isoc99_vfscanf(FILE *, const char *, va_list);
extern int __isoc99_vscanf(const char *, va_list);
extern int __isoc99_vswscanf(const wchar_t *, const wchar_t *, va_list);
extern int __isoc99_vfwscanf(FILE *, const wchar_t *, va_list);
extern int __isoc99_vwscanf(const wchar_t *, va_list);

EXPORT int __isoc23_vsscanf(const char *s, const char *fmt, va_list ap) { return __isoc99_vsscanf(s, fmt, ap); }
EXPORT int __isoc23_vfscanf(FILE *f, const char *fmt, va_list ap) { return __isoc99_vfscanf(f, fmt, ap); }
EXPORT int __isoc23_vscanf(const char *fmt, va_list ap) { return __isoc99_vscanf(fmt, ap); }
EXPORT int __isoc23_vswscanf(const wchar_t *s, const wchar_t *fmt, va_list ap)
{
    return __isoc99_vswscanf(s, fmt, ap);
}
EXPORT int __isoc23_vfwscanf(FILE *f, const wchar_t *fmt, va_list ap) { return __isoc99_vfwscanf(f, fmt, ap); }
EXPORT int __isoc23_vwscanf(const wchar_t *fmt, va_list ap) { return __isoc99_vwscanf(fmt, ap); }

#define VARIADIC(NAME, V, FIRST_T, ...)                                                       \
    EXPORT int NAME(FIRST_T first, __VA_ARGS__, ...)                                          \
    {                                                                                         \
        va_list ap;                                                                           \
        va_start(ap, fmt);                                                                    \
        int r = V(first, fmt, ap);                                                            \
        va_end(ap);                                                                           \
        return r;                                                                             \
    }
VARIADIC(__isoc23_sscanf, __isoc99_vsscanf, const char *, const char *fmt)
VARIADIC(__isoc23_fscanf, __isoc99_vfscanf, FILE *, const char *fmt)
VARIADIC(__isoc23_swscanf, __isoc99_vswscanf, const wchar_t *, const wchar_t *fmt)
VARIADIC(__isoc23_fwscanf, __isoc99_vfwscanf, FILE *, const wchar_t *fmt)

EXPORT int __isoc23_scanf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = __isoc99_vscanf(fmt, ap);
    va_end(ap);
    return r;
}

EXPORT int __isoc23_wscanf(const wchar_t *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = __isoc99_vwscanf(fmt, ap);
    va_end(ap);
    return r;
}
