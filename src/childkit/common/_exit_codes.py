"""The exit codes an isolated child's runner gives an uncaught error of one of its resource
limits (the kernel only makes the call fail for memory, processes and open files, so the
runner says which limit it was). One table for the three parties that use them: the child's
runner (``launcher._child``), the sandbox's ``sys.excepthook`` (``sandbox._limits``) and the
parent that reads the reason back (``process._exit``)."""

#: An uncaught MemoryError that came with a memory limit.
MEMORY_LIMIT_EXIT_CODE = 86
#: An uncaught error from creating a process or thread past ``max_processes``.
PROCESS_LIMIT_EXIT_CODE = 87
#: An uncaught EMFILE that came with ``max_open_files``.
OPEN_FILES_LIMIT_EXIT_CODE = 88
#: An uncaught EAGAIN from starting a process in an isolated child kept to one process
#: (no cgroup holds its limits, ``allow_subprocesses`` off: docs/sandbox.md).
PROCESS_REFUSED_EXIT_CODE = 89
