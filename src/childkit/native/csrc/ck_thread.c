/*
 * Starting the kit's threads: detached, with every signal blocked (signals belong to the
 * application's threads, as in IPCKit); and this process's pid. Built into both libraries.
 */
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "ck_internal.h"

int ck__thread_start(void *(*fn)(void *), void *arg) {
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&thread, &attr, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc == 0 ? 0 : -1;
}

/* This process's pid, without a system call per use (glibc no longer caches getpid): set
 * on first use and again in every fork's child. */
static pid_t self_pid;

static void forked_child(void) { __atomic_store_n(&self_pid, getpid(), __ATOMIC_RELAXED); }

__attribute__((constructor)) static void install_pid_handler(void) {
    self_pid = getpid();
    pthread_atfork(NULL, NULL, forked_child);
}

pid_t ck__pid(void) { return __atomic_load_n(&self_pid, __ATOMIC_RELAXED); }
