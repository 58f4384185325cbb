"""``convolab explore``: an interactive convolution explorer in the browser.

Python computes every number the page shows; the page only lays them out and
asks the local server for new configurations. Nothing here is imported by
``import convolab`` or by the other commands (:mod:`convolab.cli` loads
:mod:`.command` to register the flags; the rest loads when ``explore`` runs).

:mod:`.controls`
    The page's controls as text, checked and turned into a :class:`~.controls.Config`
    (the same text syntax as ``convolab explain``), with the size caps.
:mod:`.model`
    Everything the page shows for a configuration, as JSON-ready data: the
    forward, backward and transposed views, and the details of one cell.
:mod:`.page`
    The HTML page (served, or written as a self-contained offline snapshot).
:mod:`.server`
    The local HTTP server (the standard library's ``http.server``).
:mod:`.command`
    The ``explore`` subcommand's flags, and running it.
"""
