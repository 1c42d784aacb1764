"""The pre-forked launcher: the template process (``python -m childkit.launcher``; its main
loop in ``_template``), its JSON+fds protocol with the application (``_protocol``), and a
forked child's life from fork to exit (``_child``: fd hygiene, name, sandbox, entry, report).

May import: :mod:`childkit.entry`, :mod:`childkit.sandbox`, :mod:`childkit.ipc`,
:mod:`childkit.common`. Never the application-side layers above it (process, pool, cli):
the template holds nothing of the application but what each request carries.
Kept light (no eager imports here): the template's start-up time counts.
"""
