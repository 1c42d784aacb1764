"""Many children as one: ``ChildProcessPool`` (IPC children behind one proxy-like face) and
``ChildProcessExecutor`` (``concurrent.futures`` over children), with the executor's worker
module that runs in each child (``_executor_worker``, an IPC-mode entry).

May import: :mod:`childkit.process`, :mod:`childkit.ipc`, :mod:`childkit.common`.
"""
