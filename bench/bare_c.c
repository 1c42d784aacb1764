/* The machine's bare limits for python -m bench, compiled at run time (gcc -O2).
 *
 *   bare_c pingpong MSG_BYTES ROUNDS   one AF_UNIX stream socketpair, a forked echo peer:
 *                                      prints nanoseconds per round trip
 *   bare_c memcpy BYTES REPEATS        prints the median milliseconds of one memcpy of
 *                                      BYTES between two pre-faulted buffers
 *   bare_c fork ROUNDS                 fork + _exit(0) + waitpid, one at a time: prints
 *                                      the median microseconds
 *   bare_c forkmany COUNT REPEATS      COUNT forks that _exit(0), then COUNT waitpids:
 *                                      prints the median milliseconds of the burst
 *
 * Exit status 0 and one number on stdout, or a message on stderr and status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, long n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int fail(const char *what) {
    fprintf(stderr, "bare_c: %s: %s\n", what, strerror(errno));
    return 1;
}

static int full_io(int fd, char *buf, size_t n, int writing) {
    size_t done = 0;
    while (done < n) {
        ssize_t k = writing ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        done += (size_t)k;
    }
    return 0;
}

static int pingpong(long size, long rounds) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return fail("socketpair");
    char *buf = calloc(1, (size_t)size);
    if (buf == NULL) return fail("calloc");
    pid_t pid = fork();
    if (pid < 0) return fail("fork");
    if (pid == 0) {
        close(sv[0]);
        while (full_io(sv[1], buf, (size_t)size, 0) == 0)
            if (full_io(sv[1], buf, (size_t)size, 1) < 0) break;
        _exit(0);
    }
    close(sv[1]);
    double t = now();
    for (long i = 0; i < rounds; i++) {
        if (full_io(sv[0], buf, (size_t)size, 1) < 0 || full_io(sv[0], buf, (size_t)size, 0) < 0)
            return fail("ping-pong");
    }
    t = now() - t;
    close(sv[0]);
    waitpid(pid, NULL, 0);
    free(buf);
    printf("%.1f\n", t / (double)rounds * 1e9);
    return 0;
}

static int do_memcpy(long size, long repeats) {
    char *src = malloc((size_t)size), *dst = malloc((size_t)size);
    double *v = calloc((size_t)repeats, sizeof *v);
    if (src == NULL || dst == NULL || v == NULL) return fail("malloc");
    memset(src, 1, (size_t)size); /* fault every page in before timing */
    memset(dst, 0, (size_t)size);
    for (long i = 0; i < repeats; i++) {
        double t = now();
        memcpy(dst, src, (size_t)size);
        v[i] = now() - t;
        src[i % size] ^= dst[(i * 4096) % size]; /* keep the copy observable */
    }
    printf("%.3f\n", median(v, repeats) * 1e3);
    free(src);
    free(dst);
    free(v);
    return 0;
}

static int do_fork(long rounds) {
    double *v = calloc((size_t)rounds, sizeof *v);
    if (v == NULL) return fail("calloc");
    for (long i = 0; i < rounds; i++) {
        double t = now();
        pid_t pid = fork();
        if (pid < 0) return fail("fork");
        if (pid == 0) _exit(0);
        if (waitpid(pid, NULL, 0) < 0) return fail("waitpid");
        v[i] = now() - t;
    }
    printf("%.1f\n", median(v, rounds) * 1e6);
    free(v);
    return 0;
}

static int do_forkmany(long count, long repeats) {
    double *v = calloc((size_t)repeats, sizeof *v);
    if (v == NULL) return fail("calloc");
    for (long r = 0; r < repeats; r++) {
        double t = now();
        for (long i = 0; i < count; i++) {
            pid_t pid = fork();
            if (pid < 0) return fail("fork");
            if (pid == 0) _exit(0);
        }
        for (long i = 0; i < count; i++)
            if (wait(NULL) < 0) return fail("wait");
        v[r] = now() - t;
    }
    printf("%.3f\n", median(v, repeats) * 1e3);
    free(v);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "pingpong") == 0)
        return pingpong(atol(argv[2]), atol(argv[3]));
    if (argc == 4 && strcmp(argv[1], "memcpy") == 0)
        return do_memcpy(atol(argv[2]), atol(argv[3]));
    if (argc == 3 && strcmp(argv[1], "fork") == 0)
        return do_fork(atol(argv[2]));
    if (argc == 4 && strcmp(argv[1], "forkmany") == 0)
        return do_forkmany(atol(argv[2]), atol(argv[3]));
    fprintf(stderr, "usage: bare_c pingpong SIZE ROUNDS | memcpy BYTES REPEATS | "
                    "fork ROUNDS | forkmany COUNT REPEATS\n");
    return 2;
}
