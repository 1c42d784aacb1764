/*
 * The process's IPC work threads (IPCKit's pool): jobs queued by connections run on them.
 *
 * A thread starts when a job is queued and none is idle, up to the maximum (1..32, default
 * 16, OH_IPCSkeleton_SetMaxWorkThreadNum), so a stub that calls back into its caller finds
 * a free thread. Idle threads stay (they wait on a condition variable). Threads that joined
 * with OH_IPCSkeleton_JoinWorkThread serve the same queue until
 * OH_IPCSkeleton_StopWorkThread; they do not count against the maximum.
 *
 * Ownership: a queued job belongs to the queue until a thread takes it; the job's function
 * owns its argument.
 */
#include <pthread.h>
#include <stdlib.h>

#include "ck_internal.h"

#define CK__DEFAULT_THREADS 16

typedef struct job_s {
    void (*fn)(void *);
    void *arg;
    struct job_s *next;
} job_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static job_t *head, *tail;
static int max_threads = CK__DEFAULT_THREADS;
static int started, idle;
static unsigned stop_generation; /* bumped by ck__pool_stop: joined threads return */

/* Runs jobs until the generation changes (joined threads) or forever (own threads). */
static void serve(int joined) {
    pthread_mutex_lock(&lock);
    unsigned generation = stop_generation;
    for (;;) {
        while (head == NULL && !(joined && generation != stop_generation)) {
            idle++;
            pthread_cond_wait(&wake, &lock);
            idle--;
        }
        if (head == NULL) break;
        job_t *job = head;
        head = job->next;
        if (head == NULL) tail = NULL;
        pthread_mutex_unlock(&lock);
        job->fn(job->arg);
        free(job);
        pthread_mutex_lock(&lock);
    }
    pthread_mutex_unlock(&lock);
}

static void *worker(void *unused) {
    serve(0);
    return NULL;
}

/* Starts one more worker; 0 or -1. Called with the lock held. */
static int start_thread_locked(void) {
    if (ck__thread_start(worker, NULL) < 0) return -1;
    started++;
    return 0;
}

/* A forked child has only the forking thread: none of the pool's threads, and jobs that
 * belong to the parent's connections. It starts over with an empty pool (the jobs are
 * forgotten, not run: their connections are the parent's). */
static void prepare_fork(void) { pthread_mutex_lock(&lock); }
static void parent_after_fork(void) { pthread_mutex_unlock(&lock); }
static void child_after_fork(void) {
    pthread_mutex_init(&lock, NULL);
    pthread_cond_init(&wake, NULL);
    head = tail = NULL;
    started = idle = 0;
}

__attribute__((constructor)) static void install_fork_handlers(void) {
    pthread_atfork(prepare_fork, parent_after_fork, child_after_fork);
}

int ck__pool_submit(void (*fn)(void *), void *arg) {
    job_t *job = malloc(sizeof *job);
    if (job == NULL) return -1;
    job->fn = fn;
    job->arg = arg;
    job->next = NULL;
    pthread_mutex_lock(&lock);
    /* A job needs a thread that is idle, or a new one; with neither it waits for a busy
     * thread (the maximum is reached), unless there is no thread at all. */
    if (idle == 0 && started < max_threads && start_thread_locked() < 0 && started == 0) {
        pthread_mutex_unlock(&lock);
        free(job);
        return -1;
    }
    if (tail != NULL) tail->next = job;
    else head = job;
    tail = job;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    return 0;
}

int ck__pool_max(void) {
    pthread_mutex_lock(&lock);
    int n = max_threads;
    pthread_mutex_unlock(&lock);
    return n;
}

int ck__pool_set_max(int n) {
    if (n < 1 || n > 32) return -1;
    pthread_mutex_lock(&lock);
    max_threads = n;
    pthread_mutex_unlock(&lock);
    return 0;
}

void ck__pool_join(void) {
    ck__serve_yield(); /* a request's thread that joins serves the pool from now on */
    serve(1);
}

void ck__pool_stop(void) {
    pthread_mutex_lock(&lock);
    stop_generation++;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
}
