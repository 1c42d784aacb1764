/*
 * An args-mode child linked with libchild_process.so (section III's "obtaining startup
 * parameters"): Main compares OH_Ability_GetCurrentChildProcessArgs() with the args it was
 * called with, and writes "current=<entryParams>;fds=<names>;same=<0|1>\n" through the
 * first fd. Built and run by tests/native/test_native_child.py.
 */
#include <stdio.h>
#include <string.h>

#include <AbilityKit/native_child_process.h>

void Main(NativeChildProcess_Args args)
{
    NativeChildProcess_Args *current = OH_Ability_GetCurrentChildProcessArgs();
    if (args.fdList.head == NULL) return;
    int out = args.fdList.head->fd;
    if (current == NULL) {
        dprintf(out, "current=NULL\n");
        return;
    }
    char names[256] = "";
    for (NativeChildProcess_Fd *f = current->fdList.head; f != NULL; f = f->next) {
        strncat(names, f->fdName, sizeof names - strlen(names) - 2);
        strcat(names, ",");
    }
    int same = strcmp(current->entryParams, args.entryParams) == 0 &&
               current->fdList.head->fd == args.fdList.head->fd;
    dprintf(out, "current=%s;fds=%s;same=%d\n", current->entryParams, names, same);
}
