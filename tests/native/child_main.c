/*
 * The seed article's parameter-passing child ("Main"), made observable: for every fd in
 * the list, in list order, it writes one line "params=<entryParams>;fd=<fdName>\n"
 * through that fd. tests/entry/test_entries.py builds this into a .so and runs it in a forked
 * child through childkit.entry._entries.resolve_args_entry.
 *
 * LayoutProbe exists so a test can check the struct layout from C's side: it writes
 * sizeof/offsetof figures through the first fd.
 */
#include <stddef.h>
#include <stdio.h>

#include "native_child_process.h"

void Main(NativeChildProcess_Args args)
{
    const char *entryParams = args.entryParams != NULL ? args.entryParams : "(null)";
    NativeChildProcess_Fd *current = args.fdList.head;
    while (current != NULL) {
        dprintf(current->fd, "params=%s;fd=%s\n", entryParams, current->fdName);
        current = current->next;
    }
}

void LayoutProbe(NativeChildProcess_Args args)
{
    if (args.fdList.head == NULL) {
        return;
    }
    dprintf(args.fdList.head->fd,
            "Fd=%zu,%zu,%zu,%zu FdList=%zu Args=%zu,%zu,%zu Options=%zu,%zu,%zu\n",
            sizeof(NativeChildProcess_Fd), offsetof(NativeChildProcess_Fd, fdName),
            offsetof(NativeChildProcess_Fd, fd), offsetof(NativeChildProcess_Fd, next),
            sizeof(NativeChildProcess_FdList), sizeof(NativeChildProcess_Args),
            offsetof(NativeChildProcess_Args, entryParams),
            offsetof(NativeChildProcess_Args, fdList), sizeof(NativeChildProcess_Options),
            offsetof(NativeChildProcess_Options, isolationMode),
            offsetof(NativeChildProcess_Options, reserved));
}
