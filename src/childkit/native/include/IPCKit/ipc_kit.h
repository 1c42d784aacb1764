/*
 * IPCKit: everything of childkit's libipc_capi.so in one include, as OpenHarmony's
 * ipc_kit.h. Link with -lipc_capi (see `python -m childkit.native --cflags --libs`).
 */
#ifndef CAPI_INCLUDE_IPC_KIT_H
#define CAPI_INCLUDE_IPC_KIT_H

#include "ipc_error_code.h"
#include "ipc_cparcel.h"
#include "ipc_cremote_object.h"
#include "ipc_cskeleton.h"

#endif /* CAPI_INCLUDE_IPC_KIT_H */
