"""The applications built on convolab: the ``convolab train`` and ``convolab bench`` commands.

They use the library as a user would and are not part of it: ``import convolab``
loads none of them (the command line, :mod:`convolab.cli`, loads each one when
its command runs or registers its flags).

:mod:`convolab.apps.train`
    A LeNet-5-style CNN trained with :mod:`convolab.nn`, end to end.
:mod:`convolab.apps.bench`
    The benchmark against PyTorch and SciPy: the suite, timing, machine probes, rendering.
"""
