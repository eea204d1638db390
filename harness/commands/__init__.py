"""The ``batchbench`` commands, one module each: ``NAME``, ``HELP`` (and ``DESCRIPTION``),
``add_arguments(parser)`` and ``run(args) -> exit code``, with the text it prints. ``flags``
holds what they share (the sweep flags built from the axes), ``text`` how they lay text out."""
