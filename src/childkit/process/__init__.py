"""The child-process layer, the application's side of the seed's two start modes: the
public start, connect and kill calls (``_children``), the registry of live children with
its 50-slot limit and the launcher's lifetime (``_manager``), ``ChildProcessOptions``
(``_options``), and exit notification (``_exit``: ``ChildExitInfo`` and the callback thread).

May import: :mod:`childkit.launcher` (its protocol), :mod:`childkit.entry`,
:mod:`childkit.sandbox`, :mod:`childkit.ipc`, :mod:`childkit.common`. Imported by the public
face, :mod:`childkit.pool`, :mod:`childkit.aio` and :mod:`childkit.cli`.
"""
