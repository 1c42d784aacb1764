/*
 * Starting the kit's threads: detached, with every signal blocked (signals belong to the
 * application's threads, as in IPCKit). Built into both libraries.
 */
#include <pthread.h>
#include <signal.h>

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
